//! The gateway's shared state, and the traits through which the adapters reach it:
//! [`CameraDirectory`] for the RTSP server, [`CatalogProvider`] and [`Importer`] for
//! the link. Every cross-boundary decision goes through [`policy::evaluate`] here.
//!
//! # Onward sharing (re-shared imported cameras)
//!
//! A camera we import from an upstream site may go on to a partner P only when all of
//! these hold, checked for every catalog, stream and viewing session ([`Gateway::decide`]):
//! 1. the upstream's current catalog lists it for us, and its restrictions name P in
//!    `onward` (P is never the upstream itself), and the upstream's grant has not ended;
//! 2. our own policy grants it to P (in our ids, prefix included), hours and all;
//! 3. for a viewing session, its origin is named by the upstream's `onward` too (our
//!    policy checked it against ours), and an upstream `on_request` needs an agent with
//!    a reason and an intervention, as ours would;
//! 4. for the catalog, P declared `onward` (every re-shared camera carries the
//!    upstream's onward rule, even an empty one) and every feature its restrictions
//!    need.
//!
//! The restrictions P receives ([`onward_restrictions`]): `on_request` when the upstream
//! said so or our grant is on request (a restriction from upstream always travels on),
//! `onward` our grant's list intersected with the upstream's (P re-shares only where
//! both allow), `grant_end` the upstream's (our grants end only with the policy).
//!
//! A session on a re-shared camera, once our policy allowed it, is carried to the
//! camera's site over our link with it (same agent, kind, reason, intervention and
//! origin) and answered only once that site answered ([`ViewDecision::Relayed`]); both
//! journals record it, ours as `provider` towards P. A change in an upstream catalog
//! re-evaluates every partner's catalog, streams and sessions, as a policy change does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use tokio::sync::watch;

use crate::channel::{Channel, ChannelSettings};
use crate::control::{CatalogCamera, ErrorCode, Feature, Restrictions};
use crate::ids::{CameraId, CameraPattern, SiteId};
use crate::ingest::CameraStatus;
use crate::journal::{
    Event, Journal, SessionEnded, SessionRefused, SessionRole, ViewerKind, Viewing, new_session_id,
};
use crate::link::{CatalogProvider, Importer, LinkHandle, ViewDecision, ViewEnd, ViewGuard};
use crate::policy::{
    self, AgentKind, Decision, Grant, LastRefusal, Mode, VerifiedPolicy, ViewingSession,
};
use crate::status::{CameraSource, CameraView, LinkView, PolicyView};
use crate::viewing::{CameraDirectory, Mount, ViewRefusal, Viewer};

/// A camera of this site, pulled by ingest.
pub(super) struct LocalCamera {
    pub channel: Channel,
    pub status: watch::Receiver<CameraStatus>,
}

/// What we import from one partner.
pub(super) struct ImportRule {
    pub prefix: CameraId,
    /// Patterns in the provider's ids.
    pub patterns: Vec<CameraPattern>,
}

/// The gateway: local cameras, imported cameras, the policy in force and the link.
pub(super) struct Gateway {
    site: SiteId,
    local: HashMap<CameraId, LocalCamera>,
    imports: HashMap<SiteId, ImportRule>,
    /// Imported cameras in our ids, created when a partner's catalog lists them.
    imported: Mutex<HashMap<CameraId, Channel>>,
    /// The partners' catalogs, in their ids.
    catalogs: Mutex<HashMap<SiteId, Vec<CatalogCamera>>>,
    /// The policy admitted last (it may be outside its validity: then nothing crosses);
    /// `None` until one is admitted: fail closed.
    policy: RwLock<Option<Arc<VerifiedPolicy>>>,
    /// The last refusal, cleared by the next admission, for `/readyz`.
    policy_refusal: RwLock<Option<LastRefusal>>,
    channel_settings: ChannelSettings,
    link: OnceLock<LinkHandle>,
    /// Open interventions (`None` without the `[http]` listener).
    interventions: OnceLock<crate::interventions::InterventionStore>,
    register: Register,
}

type ProvidedKey = (SiteId, CameraId, String, SiteId);

/// A journaled viewing session still open.
struct OpenSession {
    id: String,
    meter: SessionMeter,
}

/// What a viewing session's end record measures: its duration, and the packets and
/// bytes its camera's channel sent while it was open (what the session could receive;
/// every session on a stream sees the same packets).
struct SessionMeter {
    started: std::time::Instant,
    channel: Option<Channel>,
    at_start: (u64, u64),
}

impl SessionMeter {
    fn start(channel: Option<Channel>) -> SessionMeter {
        let at_start = channel.as_ref().map_or((0, 0), Channel::totals);
        SessionMeter {
            started: std::time::Instant::now(),
            channel,
            at_start,
        }
    }

    /// Duration in milliseconds, packets and bytes since the start.
    fn read(&self) -> (u64, u64, u64) {
        let (packets, bytes) = self.channel.as_ref().map_or((0, 0), Channel::totals);
        (
            self.started
                .elapsed()
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            packets.saturating_sub(self.at_start.0),
            bytes.saturating_sub(self.at_start.1),
        )
    }
}

/// The access journal and the sessions partners hold on our cameras: what a viewing
/// decision records. Cheap to clone into a re-shared camera's pending decision.
#[derive(Clone)]
struct Register {
    /// `None` when the journal could not be opened: then every viewing session is
    /// refused (`JOURNAL_UNAVAILABLE`).
    journal: Option<Journal>,
    /// Viewing sessions partners opened on our cameras (own or re-shared), for their
    /// `session_ended` records. Sessions with equal keys are interchangeable, so a
    /// list each.
    provided: Arc<Mutex<HashMap<ProvidedKey, Vec<OpenSession>>>>,
}

impl Register {
    /// Appends a record; a failure means the event may not happen (a session is
    /// refused), so it maps to `JOURNAL_UNAVAILABLE`.
    fn append(&self, event: Event) -> Result<(), ErrorCode> {
        let Some(journal) = &self.journal else {
            return Err(ErrorCode::JournalUnavailable);
        };
        journal.append(event).map(|_| ()).map_err(|error| {
            tracing::error!(%error, "journal write failed: viewing sessions are refused");
            ErrorCode::JournalUnavailable
        })
    }

    /// Journals a session's refusal; a journal failure changes nothing (it is refused).
    fn refusal(&self, viewing: Viewing, refusal: ErrorCode) {
        let _ = self.append(Event::SessionRefused(SessionRefused {
            viewing,
            refusal: refusal.as_str().to_owned(),
        }));
    }

    /// Journals a partner's session opened on one of our cameras (before its first
    /// packet: no record, no viewing) and keeps it for its end record.
    fn provider_opened(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
        viewing: Viewing,
        meter: SessionMeter,
    ) -> Result<(), ErrorCode> {
        if let Err(code) = self.append(Event::SessionOpened(viewing.clone())) {
            self.refusal(viewing, code);
            return Err(code);
        }
        tracing::info!(
            %camera, %partner, agent = %session.agent, kind = session.kind.as_str(),
            reason = session.reason.as_deref().unwrap_or(""), origin = %session.origin,
            basis = viewing.basis.as_deref().unwrap_or(""), session = %viewing.session,
            "viewing session opened"
        );
        lock(&self.provided)
            .entry((
                partner.clone(),
                camera.clone(),
                session.agent.clone(),
                session.origin.clone(),
            ))
            .or_default()
            .push(OpenSession {
                id: viewing.session,
                meter,
            });
        Ok(())
    }

    /// Journals the end of a session [`Register::provider_opened`] recorded.
    fn provider_ended(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
        end: ViewEnd,
    ) {
        let key = (
            partner.clone(),
            camera.clone(),
            session.agent.clone(),
            session.origin.clone(),
        );
        let open = {
            let mut provided = lock(&self.provided);
            let open = provided.get_mut(&key).and_then(Vec::pop);
            if provided.get(&key).is_some_and(Vec::is_empty) {
                provided.remove(&key);
            }
            open
        };
        tracing::info!(%camera, %partner, agent = %session.agent, why = end.as_str(), "viewing session ended");
        let Some(open) = open else { return };
        let viewing = Viewing {
            session: open.id,
            role: SessionRole::Provider,
            camera: camera.to_string(),
            partner: Some(partner.to_string()),
            origin: session.origin.to_string(),
            agent: session.agent.clone(),
            agent_kind: viewer_kind(session.kind),
            reason: session.reason.clone(),
            intervention: session.intervention.clone(),
            policy_serial: None,
            grant: None,
            basis: None,
        };
        journal_end(self.journal.as_ref(), &viewing, &open.meter, end.as_str());
    }
}

/// Where a camera we may give a partner comes from.
enum Provenance {
    /// One of our own cameras.
    Own,
    /// Imported from `site`, whose current catalog lists it for us as `listed` (in
    /// its ids, with its restrictions).
    Imported { site: SiteId, listed: CatalogCamera },
}

/// A camera our policy (and, for a re-shared one, its upstream) lets a partner have.
struct Decided {
    policy: Arc<VerifiedPolicy>,
    /// Index of the deciding grant in `policy`.
    grant: usize,
    provenance: Provenance,
}

impl Decided {
    fn grant(&self) -> &Grant {
        &self.policy.policy.grants[self.grant]
    }
}

impl Gateway {
    pub fn new(
        site: SiteId,
        local: HashMap<CameraId, LocalCamera>,
        imports: HashMap<SiteId, ImportRule>,
        channel_settings: ChannelSettings,
        journal: Option<Journal>,
    ) -> Self {
        Gateway {
            site,
            local,
            imports,
            imported: Mutex::new(HashMap::new()),
            catalogs: Mutex::new(HashMap::new()),
            policy: RwLock::new(None),
            policy_refusal: RwLock::new(None),
            channel_settings,
            link: OnceLock::new(),
            interventions: OnceLock::new(),
            register: Register {
                journal,
                provided: Arc::new(Mutex::new(HashMap::new())),
            },
        }
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.register.journal.as_ref()
    }

    fn journal_append(&self, event: Event) -> Result<(), ErrorCode> {
        self.register.append(event)
    }

    fn journal_refusal(&self, viewing: Viewing, refusal: ErrorCode) {
        self.register.refusal(viewing, refusal);
    }

    /// Puts an admitted policy in force; the link re-checks every stream and viewing
    /// session and narrows each partner's catalog.
    pub fn apply_policy(&self, policy: Arc<VerifiedPolicy>) {
        *write(&self.policy) = Some(policy);
        *write(&self.policy_refusal) = None;
        self.export_policy_state();
        if let Some(link) = self.link.get() {
            link.policy_changed();
        }
    }

    /// `passerelle_policy_in_force`: 1 while a policy for this site is within its
    /// validity, 0 otherwise (none admitted, expired, not yet valid): what alerts watch,
    /// since nothing crosses at 0.
    fn export_policy_state(&self) {
        let in_force = self.policy().is_some_and(|verified| {
            policy::policy_status(&verified.policy, &self.site, jiff::Timestamp::now()).is_ok()
        });
        metrics::gauge!("passerelle_policy_in_force").set(if in_force { 1.0 } else { 0.0 });
    }

    /// Records a refused policy: the one in force (or none) stays.
    pub fn policy_refused(&self, refusal: LastRefusal) {
        *write(&self.policy_refusal) = Some(refusal);
    }

    /// Re-evaluates everything against the policy in force (hours windows, validity).
    pub fn policy_clock_tick(&self) {
        self.export_policy_state();
        if let Some(link) = self.link.get() {
            link.policy_changed();
        }
    }

    /// The policy admitted last, shared: decisions read it without copying.
    pub fn policy(&self) -> Option<Arc<VerifiedPolicy>> {
        self.policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The policy and link state, for `/readyz`'s body.
    pub fn status(&self) -> serde_json::Value {
        let verified = self
            .policy
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let refusal = self
            .policy_refusal
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        let policy = serde_json::json!({
            "state": match &verified {
                Some(verified) => match policy::policy_status(&verified.policy, &self.site, jiff::Timestamp::now()) {
                    Ok(()) => "in_force",
                    Err(reason) => reason.as_str(),
                },
                None => "none",
            },
            "serial": verified.as_ref().map(|v| v.policy.serial),
            "valid_until": verified.as_ref().map(|v| v.policy.valid_until.to_string()),
            "signers": verified.as_ref().map(|v| v.signers().iter().map(ToString::to_string).collect::<Vec<_>>()),
            "last_refusal": refusal.map(|r| serde_json::json!({
                "reason": r.reason, "message": r.message, "at": r.at.to_string(),
            })),
        });
        let links: Vec<serde_json::Value> = self
            .link
            .get()
            .map(LinkHandle::status)
            .unwrap_or_default()
            .into_iter()
            .map(|status| {
                serde_json::json!({
                    "partner": status.partner.as_str(),
                    "connected": status.connected,
                    "since": status.since.map(|since| since.to_string()),
                    "peer_catalog_len": status.peer_catalog_len,
                })
            })
            .collect();
        let journal = self.register.journal.as_ref().map_or_else(
            || serde_json::json!({ "open": false, "writable": false }),
            |journal| {
                serde_json::json!({
                    "open": true,
                    "writable": journal.writable(),
                    "id": journal.id().as_str(),
                    "write_failures": journal.write_failures(),
                })
            },
        );
        serde_json::json!({
            "site": self.site.as_str(),
            "policy": policy,
            "links": links,
            "journal": journal,
        })
    }

    /// The policy in force for the status API: state, validity, signers and the last
    /// refusal since it was admitted.
    pub fn policy_view(&self) -> PolicyView {
        let verified = self.policy();
        let problem = self
            .policy_refusal
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .as_ref()
            .map(|refusal| format!("{} at {}: {}", refusal.reason, refusal.at, refusal.message));
        let Some(verified) = verified else {
            return PolicyView {
                state: "none",
                serial: None,
                valid_from: None,
                valid_until: None,
                signers: Vec::new(),
                problem,
            };
        };
        let policy = &verified.policy;
        PolicyView {
            state: match policy::policy_status(policy, &self.site, jiff::Timestamp::now()) {
                Ok(()) => "valid",
                Err(reason) => reason.as_str(),
            },
            serial: Some(policy.serial),
            valid_from: Some(policy.valid_from.to_string()),
            valid_until: Some(policy.valid_until.to_string()),
            signers: verified.signers().iter().map(ToString::to_string).collect(),
            problem,
        }
    }

    /// Every camera this site can show, for the status API: its own, then those the
    /// partners' catalogs list and we import, in id order.
    pub fn camera_views(&self) -> Vec<CameraView> {
        // Each partner and whether its link is up, read once for the whole list.
        let links: HashMap<SiteId, bool> = self
            .link
            .get()
            .map(LinkHandle::status)
            .unwrap_or_default()
            .into_iter()
            .map(|status| (status.partner, status.connected))
            .collect();
        let shared_with = |camera: &CameraId| -> Vec<String> {
            let mut partners: Vec<String> = links
                .keys()
                .filter(|partner| self.decide(partner, camera, None).is_ok())
                .map(ToString::to_string)
                .collect();
            partners.sort();
            partners
        };
        let codec = |channel: Option<&Channel>| {
            channel
                .and_then(Channel::info)
                .map(|info| codec_name(info.codec))
        };
        let mut views: Vec<CameraView> = self
            .local
            .iter()
            .map(|(id, local)| CameraView {
                id: id.to_string(),
                source: CameraSource::Local,
                site: self.site.to_string(),
                codec: codec(Some(&local.channel)),
                state: local.status.borrow().state.as_str(),
                viewers: local.channel.subscriber_count(),
                shared_with: shared_with(id),
                on_request: false,
            })
            .collect();
        let catalogs = lock(&self.catalogs).clone();
        let imported = lock(&self.imported).clone();
        for (partner, cameras) in &catalogs {
            let Some(rule) = self.imports.get(partner) else {
                continue;
            };
            let up = links.get(partner).copied().unwrap_or(false);
            for camera in cameras {
                if !rule.patterns.iter().any(|p| p.matches(&camera.id)) {
                    continue;
                }
                let Ok(ours) = camera.id.with_prefix(&rule.prefix) else {
                    continue;
                };
                let channel = imported.get(&ours);
                let viewers = channel.map_or(0, Channel::subscriber_count);
                let state = match (up, camera.up, viewers) {
                    (false, _, _) => "unavailable",
                    (true, false, _) => "failed",
                    (true, true, 0) => "idle",
                    (true, true, _) => "playing",
                };
                views.push(CameraView {
                    id: ours.to_string(),
                    source: CameraSource::Partner,
                    site: partner.to_string(),
                    codec: camera.codec.map(codec_name),
                    state,
                    viewers,
                    shared_with: shared_with(&ours),
                    on_request: camera.restrictions.on_request,
                });
            }
        }
        views.sort_by(|a, b| a.id.cmp(&b.id));
        views
    }

    /// Every configured partner link, for the status API.
    pub fn link_views(&self) -> Vec<LinkView> {
        let mut views: Vec<LinkView> = self
            .link
            .get()
            .map(LinkHandle::status)
            .unwrap_or_default()
            .into_iter()
            .map(|status| LinkView {
                peer: status.partner.to_string(),
                state: if status.connected { "up" } else { "down" },
                since: status.since.map(|since| since.to_string()),
                rtt_ms: status.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                streams: status.streams,
                remote: status.remote.map(|remote| remote.to_string()),
                direction: status.direction.map(|direction| match direction {
                    crate::tls::Direction::Inbound => "accepted",
                    crate::tls::Direction::Outbound => "dialled",
                }),
                peer_cameras: status.peer_catalog_len,
            })
            .collect();
        views.sort_by(|a, b| a.peer.cmp(&b.peer));
        views
    }

    /// Attaches the interventions of the `[http]` listener: an agent's open intervention
    /// gives its viewing sessions their reason.
    pub fn attach_interventions(&self, store: crate::interventions::InterventionStore) {
        // Called once at start, like `attach_link`.
        let _ = self.interventions.set(store);
    }

    /// Attaches the link once it is bound (it needs the gateway first).
    pub fn attach_link(&self, link: LinkHandle) {
        // Called once at start; a second call would be a wiring bug, and keeping the
        // first link is the safe outcome.
        let _ = self.link.set(link);
    }

    pub fn link(&self) -> Option<&LinkHandle> {
        self.link.get()
    }

    /// The partner an imported camera id comes from, and the id at that partner.
    fn import_source(&self, camera: &CameraId) -> Option<(&SiteId, CameraId)> {
        self.imports.iter().find_map(|(partner, rule)| {
            let remote = camera.strip_prefix(&rule.prefix)?;
            rule.patterns
                .iter()
                .any(|pattern| pattern.matches(&remote))
                .then_some((partner, remote))
        })
    }

    /// The channel of an imported camera, created on first use.
    /// The channel of a local or already imported camera.
    fn channel_of(&self, camera: &CameraId) -> Option<Channel> {
        self.local
            .get(camera)
            .map(|local| local.channel.clone())
            .or_else(|| lock(&self.imported).get(camera).cloned())
    }

    /// Samples every channel's bitrate; called every second.
    pub fn sample_bitrates(&self) {
        let now = tokio::time::Instant::now();
        for local in self.local.values() {
            local.channel.sample_bitrate(now);
        }
        for channel in lock(&self.imported).values() {
            channel.sample_bitrate(now);
        }
    }

    fn imported_channel(&self, camera: &CameraId) -> Channel {
        let mut imported = self
            .imported
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        imported
            .entry(camera.clone())
            .or_insert_with(|| Channel::new(camera.clone(), self.channel_settings.clone()))
            .clone()
    }

    /// An imported camera's upstream site and its entry in that site's current
    /// catalog; `None` when the camera is not imported or no longer listed.
    fn upstream_listing(&self, camera: &CameraId) -> Option<(SiteId, CatalogCamera)> {
        let (site, remote) = self.import_source(camera)?;
        let catalogs = lock(&self.catalogs);
        let listed = catalogs.get(site)?.iter().find(|c| c.id == remote)?.clone();
        Some((site.clone(), listed))
    }

    /// Decides whether `partner` may have `camera` (our id), optionally for a viewing
    /// session, under the policy in force now and, for an imported camera, under its
    /// upstream's restrictions (the module doc's rules 1 to 3).
    fn decide(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: Option<&ViewingSession>,
    ) -> Result<Decided, ErrorCode> {
        let provenance = if self.local.contains_key(camera) {
            Provenance::Own
        } else {
            let (site, listed) = self.upstream_listing(camera).ok_or(ErrorCode::NotGranted)?;
            Provenance::Imported { site, listed }
        };
        self.decide_from(partner, camera, session, provenance)
    }

    /// [`Gateway::decide`] for a camera whose provenance is known.
    fn decide_from(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: Option<&ViewingSession>,
        provenance: Provenance,
    ) -> Result<Decided, ErrorCode> {
        let now = jiff::Timestamp::now();
        // Upstream first, so a camera the partner may not know about looks absent
        // (`NOT_GRANTED`) rather than refused for a reason that would confirm it.
        if let Provenance::Imported { site, listed } = &provenance {
            upstream_allows_partner(site, &listed.restrictions, partner, now)?;
        }
        let policy = self.policy();
        let decision = policy::evaluate(
            policy.as_deref().map(|verified| &verified.policy),
            &self.site,
            partner,
            camera,
            session,
            now,
        );
        let grant = match decision {
            Decision::Allow { grant, .. } => grant,
            Decision::Deny(reason) => return Err(ErrorCode::from(reason)),
        };
        let policy = policy.ok_or(ErrorCode::NoPolicy)?;
        if let (Provenance::Imported { listed, .. }, Some(session)) = (&provenance, session) {
            upstream_allows_session(&listed.restrictions, session)?;
        }
        Ok(Decided {
            policy,
            grant,
            provenance,
        })
    }

    /// Our catalog entry for one of our own cameras, if `partner` may have it.
    fn own_catalog_entry(
        &self,
        partner: &SiteId,
        features: &[Feature],
        id: &CameraId,
        local: &LocalCamera,
    ) -> Option<CatalogCamera> {
        let decided = self.decide(partner, id, None).ok()?;
        let grant = decided.grant();
        let restrictions = Restrictions {
            on_request: grant.mode == Mode::OnRequest,
            onward: grant.onward.clone(),
            grant_end: None,
        };
        // A restriction the peer would not enforce withholds the camera.
        if !restrictions.enforced_by(features) {
            return None;
        }
        let info = local.channel.info();
        Some(CatalogCamera {
            id: id.clone(),
            codec: info.as_ref().map(|info| info.codec),
            parameter_sets: info.map(|info| info.parameter_sets).unwrap_or_default(),
            restrictions,
            up: local.status.borrow().up,
        })
    }

    /// Our catalog entry for an imported camera (`id`, ours) that `site` lists as
    /// `listed`, if we may re-share it to `partner`: rules 1, 2 and 4 of the module doc.
    fn reshared_catalog_entry(
        &self,
        partner: &SiteId,
        features: &[Feature],
        id: CameraId,
        (site, listed): (SiteId, CatalogCamera),
    ) -> Option<CatalogCamera> {
        if !features.contains(&Feature::Onward) {
            return None;
        }
        let provenance = Provenance::Imported { site, listed };
        let decided = self.decide_from(partner, &id, None, provenance).ok()?;
        let Provenance::Imported { listed, .. } = &decided.provenance else {
            return None;
        };
        let restrictions = onward_restrictions(&listed.restrictions, decided.grant());
        if !restrictions.enforced_by(features) {
            return None;
        }
        Some(CatalogCamera {
            id,
            codec: listed.codec,
            parameter_sets: listed.parameter_sets.clone(),
            restrictions,
            up: listed.up,
        })
    }
}

/// Rule 1 of the module doc: may `partner` have a camera whose upstream `site`
/// restricted it so? Never back to its own site, only to a site its `onward` names, and
/// not past the upstream grant's end.
fn upstream_allows_partner(
    site: &SiteId,
    upstream: &Restrictions,
    partner: &SiteId,
    now: jiff::Timestamp,
) -> Result<(), ErrorCode> {
    if partner == site || !upstream.onward.contains(partner) {
        return Err(ErrorCode::NotGranted);
    }
    if upstream.grant_end.is_some_and(|end| now >= end) {
        return Err(ErrorCode::NotGranted);
    }
    Ok(())
}

/// Rule 3 of the module doc: the upstream's restrictions on a viewing session of a
/// re-shared camera (the camera's site decides too; we refuse what it would).
fn upstream_allows_session(
    upstream: &Restrictions,
    session: &ViewingSession,
) -> Result<(), ErrorCode> {
    if !upstream.onward.contains(&session.origin) {
        return Err(ErrorCode::NotGranted);
    }
    if upstream.on_request {
        if session.kind == AgentKind::Service {
            return Err(ErrorCode::ServiceAccount);
        }
        let present = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.trim().is_empty());
        if !(present(&session.reason) && present(&session.intervention)) {
            return Err(ErrorCode::NoIntervention);
        }
    }
    Ok(())
}

/// The restrictions a re-shared camera carries downstream: the upstream's, narrowed
/// by our grant, never widened.
fn onward_restrictions(upstream: &Restrictions, grant: &Grant) -> Restrictions {
    Restrictions {
        // A restriction from upstream always travels on.
        on_request: upstream.on_request || grant.mode == Mode::OnRequest,
        // Where our grant lets the partner re-share AND the upstream allows it.
        onward: grant
            .onward
            .iter()
            .filter(|site| upstream.onward.contains(site))
            .cloned()
            .collect(),
        // The earlier of the two ends: our grants end only with the policy's validity
        // (which the wire does not carry), so the upstream's.
        grant_end: upstream.grant_end,
    }
}

/// Held by an RTSP session while it plays: the session at the camera's site (for an
/// imported camera, closed on drop), and the journal record to end.
pub(super) struct ViewHold {
    #[expect(dead_code, reason = "held for its Drop, which sends ViewClose")]
    remote: Option<ViewGuard>,
    journal: Option<Journal>,
    viewing: Viewing,
    meter: SessionMeter,
}

impl Drop for ViewHold {
    fn drop(&mut self) {
        journal_end(self.journal.as_ref(), &self.viewing, &self.meter, "closed");
    }
}

impl CameraDirectory for Gateway {
    type Guard = ViewHold;

    fn credentials_refused(&self, user: Option<&str>, reason: &str) {
        if let Some(journal) = self.journal() {
            journal.note_failure(
                crate::journal::FailureKind::Authentication,
                user.unwrap_or("unknown"),
                reason,
            );
        }
    }

    fn mount(&self, camera: &CameraId) -> Option<Mount> {
        if let Some(local) = self.local.get(camera) {
            return Some(Mount {
                tracks: vec![local.channel.clone()],
            });
        }
        let (partner, remote) = self.import_source(camera)?;
        let catalogs = self
            .catalogs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // An imported camera exists here only while its site lists it for us.
        catalogs.get(partner)?.iter().find(|c| c.id == remote)?;
        drop(catalogs);
        Some(Mount {
            tracks: vec![self.imported_channel(camera)],
        })
    }

    async fn open_view(&self, viewer: &Viewer, camera: &CameraId) -> Result<ViewHold, ViewRefusal> {
        // The agent's open intervention on this camera gives the session its reason,
        // whatever the client; it travels with the session to the camera's site.
        let active = self
            .interventions
            .get()
            .and_then(|store| store.active_for(&viewer.name, camera, jiff::Timestamp::now()));
        let (reason, intervention) = match active {
            Some(active) => (Some(active.reason), Some(active.id.as_str().to_owned())),
            None => (None, None),
        };
        let mut viewing = Viewing {
            session: new_session_id(),
            role: SessionRole::Local,
            camera: camera.to_string(),
            partner: None,
            origin: self.site.to_string(),
            agent: viewer.name.clone(),
            agent_kind: viewer_kind(viewer.kind),
            reason: reason.clone(),
            intervention: intervention.clone(),
            policy_serial: None,
            grant: None,
            basis: None,
        };
        let remote = if self.local.contains_key(camera) {
            None
        } else {
            let (partner, _) = self.import_source(camera).ok_or(ViewRefusal::NotFound)?;
            viewing.role = SessionRole::Viewer;
            viewing.partner = Some(partner.to_string());
            let link = self.link.get().ok_or(ViewRefusal::Unavailable)?;
            let session = ViewingSession {
                agent: viewer.name.clone(),
                kind: viewer.kind,
                reason,
                intervention,
                origin: self.site.clone(),
            };
            match link.open_view(partner, camera, session).await {
                Ok(guard) => Some(guard),
                Err(code) => {
                    self.journal_refusal(viewing, code);
                    return Err(refusal(code));
                }
            }
        };
        // Before the first packet: no record, no viewing.
        if let Err(code) = self.journal_append(Event::SessionOpened(viewing.clone())) {
            self.journal_refusal(viewing, code);
            return Err(refusal(code));
        }
        let channel = match self.local.get(camera) {
            Some(local) => local.channel.clone(),
            None => self.imported_channel(camera),
        };
        Ok(ViewHold {
            remote,
            journal: self.register.journal.clone(),
            viewing,
            meter: SessionMeter::start(Some(channel)),
        })
    }
}

fn viewer_kind(kind: AgentKind) -> ViewerKind {
    match kind {
        AgentKind::Agent => ViewerKind::Agent,
        AgentKind::Service => ViewerKind::Service,
    }
}

/// How a refusal from the camera's site shows to an RTSP client: 404 for what it may
/// not know about, 403 for a camera it knows but may not watch now, 503 otherwise.
fn refusal(code: ErrorCode) -> ViewRefusal {
    match code {
        ErrorCode::NotGranted | ErrorCode::NoPolicy | ErrorCode::Withdrawn => ViewRefusal::NotFound,
        ErrorCode::CameraUnavailable
        | ErrorCode::ShuttingDown
        | ErrorCode::JournalUnavailable
        | ErrorCode::MaxStreams
        | ErrorCode::MaxBitrate => ViewRefusal::Unavailable,
        other => ViewRefusal::Forbidden {
            reason: other.as_str().to_owned(),
        },
    }
}

impl CatalogProvider for Gateway {
    fn policy_serial(&self) -> Option<u64> {
        self.policy().map(|verified| verified.policy.serial)
    }

    fn catalog(&self, partner: &SiteId, features: &[Feature]) -> Vec<CatalogCamera> {
        let mut cameras: Vec<CatalogCamera> = self
            .local
            .iter()
            .filter_map(|(id, local)| self.own_catalog_entry(partner, features, id, local))
            .collect();
        // Imported cameras, in our ids, as their sites list them now (collected first:
        // deciding reads the catalogs again).
        let imported: Vec<(CameraId, (SiteId, CatalogCamera))> = {
            let catalogs = lock(&self.catalogs);
            catalogs
                .iter()
                .filter_map(|(site, listed)| Some((site, self.imports.get(site)?, listed)))
                .flat_map(|(site, rule, listed)| {
                    listed
                        .iter()
                        .filter(|c| rule.patterns.iter().any(|p| p.matches(&c.id)))
                        .filter_map(|c| {
                            let ours = c.id.with_prefix(&rule.prefix).ok()?;
                            Some((ours, (site.clone(), c.clone())))
                        })
                })
                .collect()
        };
        cameras.extend(
            imported.into_iter().filter_map(|(id, source)| {
                self.reshared_catalog_entry(partner, features, id, source)
            }),
        );
        cameras.sort_by(|a, b| a.id.cmp(&b.id));
        cameras
    }

    fn handshake_refused(&self, peer: &str, reason: &str) {
        if let Some(journal) = self.journal() {
            journal.note_failure(crate::journal::FailureKind::Handshake, peer, reason);
        }
    }

    fn stream(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        active: &[CameraId],
    ) -> Result<Channel, ErrorCode> {
        let decided = self.decide(partner, camera, None)?;
        let grant = decided.grant();
        if let Some(max) = grant.max_streams {
            let held = active
                .iter()
                .filter(|held| *held != camera && grant.cameras.iter().any(|p| p.matches(held)))
                .count();
            if held >= max as usize {
                return Err(ErrorCode::MaxStreams);
            }
        }
        let channel = match decided.provenance {
            Provenance::Own => self
                .local
                .get(camera)
                .map(|local| local.channel.clone())
                .ok_or(ErrorCode::NotGranted)?,
            // Fed while an upstream session on it is open: the first allowed viewing
            // session opens one.
            Provenance::Imported { .. } => self.imported_channel(camera),
        };
        tracing::debug!(%camera, kbps = channel.bitrate_kbps(), cap = ?grant.max_bitrate_kbps, active = active.len(), "stream admission");
        if let Some(max) = grant.max_bitrate_kbps {
            // Admission on measured rates: the streams this partner holds under the grant
            // plus this camera's current rate (0 while it is cold).
            let held: u64 = active
                .iter()
                .filter(|held| *held != camera && grant.cameras.iter().any(|p| p.matches(held)))
                .filter_map(|held| self.channel_of(held))
                .map(|held| held.bitrate_kbps())
                .sum();
            if held + channel.bitrate_kbps() > u64::from(max) {
                tracing::info!(
                    %camera, %partner, held_kbps = held, camera_kbps = channel.bitrate_kbps(),
                    max_kbps = max, "stream refused: the grant's bitrate cap"
                );
                return Err(ErrorCode::MaxBitrate);
            }
        }
        Ok(channel)
    }

    fn open_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> ViewDecision {
        let decided = self.decide(partner, camera, Some(session));
        let mut viewing = Viewing {
            session: new_session_id(),
            role: SessionRole::Provider,
            camera: camera.to_string(),
            partner: Some(partner.to_string()),
            origin: session.origin.to_string(),
            agent: session.agent.clone(),
            agent_kind: viewer_kind(session.kind),
            reason: session.reason.clone(),
            intervention: session.intervention.clone(),
            policy_serial: self.policy().map(|verified| verified.policy.serial),
            grant: None,
            basis: None,
        };
        let decided = match decided {
            Ok(decided) => decided,
            Err(code) => {
                tracing::info!(
                    %camera, %partner, agent = %session.agent, kind = session.kind.as_str(),
                    origin = %session.origin, refusal = code.as_str(), "viewing session refused"
                );
                self.journal_refusal(viewing, code);
                return ViewDecision::Now(Err(code));
            }
        };
        viewing.policy_serial = Some(decided.policy.policy.serial);
        viewing.grant = u32::try_from(decided.grant).ok();
        viewing.basis = Some(decided.grant().basis.clone());
        let Provenance::Imported { site, .. } = decided.provenance else {
            let meter = SessionMeter::start(self.local.get(camera).map(|l| l.channel.clone()));
            return ViewDecision::Now(
                self.register
                    .provider_opened(partner, camera, session, viewing, meter),
            );
        };
        let Some(link) = self.link.get().cloned() else {
            self.journal_refusal(viewing, ErrorCode::CameraUnavailable);
            return ViewDecision::Now(Err(ErrorCode::CameraUnavailable));
        };
        tracing::info!(
            %camera, %partner, upstream = %site, agent = %session.agent,
            origin = %session.origin, "viewing session allowed here, asking the camera's site"
        );
        let register = self.register.clone();
        let channel = self.imported_channel(camera);
        let (partner, camera, session) = (partner.clone(), camera.clone(), session.clone());
        ViewDecision::Relayed(Box::pin(async move {
            // The same session, origin included, to the camera's own site: its policy
            // decides and its journal records it.
            match link.open_view(&site, &camera, session.clone()).await {
                Ok(guard) => {
                    // No await from here on (see `ViewDecision::Relayed`); a journal
                    // failure drops the guard, which closes the session upstream.
                    let meter = SessionMeter::start(Some(channel));
                    register.provider_opened(&partner, &camera, &session, viewing, meter)?;
                    Ok(guard)
                }
                Err(code) => {
                    tracing::info!(
                        %camera, %partner, upstream = %site, agent = %session.agent,
                        refusal = code.as_str(), "viewing session refused by the camera's site"
                    );
                    register.refusal(viewing, code);
                    Err(code)
                }
            }
        }))
    }

    fn check_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> Result<(), ErrorCode> {
        self.decide(partner, camera, Some(session)).map(|_| ())
    }

    fn close_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
        end: ViewEnd,
    ) {
        self.register.provider_ended(partner, camera, session, end);
    }
}

impl Importer for Gateway {
    fn checkpoint(&self, partner: &SiteId, checkpoint: crate::control::Checkpoint) {
        let peer = crate::journal::PeerCheckpoint::from_wire(partner, &checkpoint);
        if self.journal_append(Event::PeerCheckpoint(peer)).is_err() {
            tracing::error!(%partner, "could not journal the partner's checkpoint");
        }
    }

    fn channel(&self, partner: &SiteId, camera: &CameraId) -> Option<Channel> {
        let (source, _) = self.import_source(camera)?;
        (source == partner).then(|| self.imported_channel(camera))
    }

    fn catalog_changed(&self, partner: &SiteId, cameras: &[CatalogCamera]) {
        let Some(rule) = self.imports.get(partner) else {
            return;
        };
        for camera in cameras {
            if !rule.patterns.iter().any(|p| p.matches(&camera.id)) {
                continue;
            }
            let (Ok(ours), Some(codec)) = (camera.id.with_prefix(&rule.prefix), camera.codec)
            else {
                continue;
            };
            if !camera.parameter_sets.is_empty() {
                self.imported_channel(&ours)
                    .set_info(crate::media::StreamInfo {
                        codec,
                        clock_rate: 90_000,
                        parameter_sets: camera.parameter_sets.clone(),
                    });
            }
        }
        tracing::info!(%partner, cameras = cameras.len(), "partner catalog received");
        let changed = lock(&self.catalogs)
            .insert(partner.clone(), cameras.to_vec())
            .is_none_or(|before| before != cameras);
        // What we re-share of it follows at once: every partner's catalog, streams and
        // sessions are decided again, as after a policy change. Only on a real change,
        // so two sites' updates cannot echo each other forever.
        if changed && let Some(link) = self.link.get() {
            link.policy_changed();
        }
    }
}

/// The codec as the status API names it.
fn codec_name(codec: crate::media::Codec) -> &'static str {
    match codec {
        crate::media::Codec::H264 => "h264",
        crate::media::Codec::H265 => "h265",
    }
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    // A panic while holding the lock cannot leave a half-written policy: the value is
    // replaced whole.
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps hold whole entries: a panic elsewhere cannot leave one half-updated.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Journals the end of a session opened with `viewing`; a failure is logged (the
/// session is over either way).
fn journal_end(journal: Option<&Journal>, viewing: &Viewing, meter: &SessionMeter, why: &str) {
    let (duration_ms, packets, bytes) = meter.read();
    let ended = Event::SessionEnded(SessionEnded {
        session: viewing.session.clone(),
        camera: viewing.camera.clone(),
        partner: viewing.partner.clone(),
        origin: viewing.origin.clone(),
        agent: viewing.agent.clone(),
        intervention: viewing.intervention.clone(),
        duration_ms,
        packets,
        bytes,
        why: why.to_owned(),
    });
    let written = journal.map(|journal| journal.append(ended));
    if !matches!(written, Some(Ok(_))) {
        tracing::error!(session = %viewing.session, "the end of a viewing session could not be journaled");
    }
}

#[cfg(test)]
mod tests {
    //! The onward rules of the module doc on a gateway without a link or journal: a
    //! CSU importing two SNCF cameras, under a policy that would give more than the
    //! SNCF allows.

    use super::*;
    use crate::media::Codec;
    use crate::policy::{PolicyDigest, VerifiedSignatures};

    const SNCF: &str = "sncf.metz.example";
    const CSU: &str = "csu.metz.example";
    const CCOR: &str = "ccor.metz.example";
    const CORG: &str = "corg.gendarmerie.example";
    const FURTHER: &str = "further.metz.example";

    fn id(s: &str) -> SiteId {
        s.parse().unwrap()
    }

    fn cam(s: &str) -> CameraId {
        s.parse().unwrap()
    }

    fn policy(text: &str) -> Arc<VerifiedPolicy> {
        Arc::new(VerifiedPolicy {
            path: "policy.toml".into(),
            policy: crate::policy::Policy::parse(text).unwrap(),
            signatures: VerifiedSignatures {
                signers: Vec::new(),
                trusted_comments: Vec::new(),
                ignored: Vec::new(),
                digest: PolicyDigest::of(text.as_bytes()),
            },
        })
    }

    /// Our grants are wider than the SNCF's onward: the CCOR may pass Metz Ville on
    /// to FURTHER and the CORG, the CORG gets every SNCF camera.
    fn csu() -> Gateway {
        let gateway = Gateway::new(
            id(CSU),
            HashMap::new(),
            HashMap::from([(
                id(SNCF),
                ImportRule {
                    prefix: cam("sncf"),
                    patterns: vec![
                        "metz-ville/**".parse().unwrap(),
                        "woippy/**".parse().unwrap(),
                    ],
                },
            )]),
            ChannelSettings::default(),
            None,
        );
        gateway.apply_policy(policy(&format!(
            r#"version = 1
site = "{CSU}"
serial = 3
valid_from = 2026-01-01T00:00:00Z
valid_until = 2099-12-31T23:59:59Z
time_zone = "Europe/Paris"
reference = "test"

[[grant]]
partner = "{CCOR}"
cameras = ["sncf/metz-ville/**", "sncf/woippy/**"]
mode = "live"
onward = ["{FURTHER}", "{CORG}"]
basis = "test"

[[grant]]
partner = "{CORG}"
cameras = ["sncf/**"]
mode = "live"
basis = "test"
"#
        )));
        gateway
    }

    fn listed(id: &str, restrictions: Restrictions) -> CatalogCamera {
        CatalogCamera {
            id: cam(id),
            codec: Some(Codec::H264),
            parameter_sets: Vec::new(),
            restrictions,
            up: true,
        }
    }

    fn later() -> jiff::Timestamp {
        jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)
    }

    /// The SNCF's catalog: Metz Ville on request, onward to the CCOR and FURTHER, with a
    /// grant end; Woippy with no onward; the control room, which we do not import.
    fn sncf_catalog(grant_end: jiff::Timestamp) -> Vec<CatalogCamera> {
        vec![
            listed(
                "metz-ville/quai-1",
                Restrictions {
                    on_request: true,
                    onward: vec![id(CCOR), id(FURTHER)],
                    grant_end: Some(grant_end),
                },
            ),
            listed("woippy/quai-1", Restrictions::default()),
            listed(
                "poste-de-commande/salle",
                Restrictions {
                    onward: vec![id(CCOR)],
                    ..Restrictions::default()
                },
            ),
        ]
    }

    fn session(origin: &str, kind: AgentKind, reason: bool) -> ViewingSession {
        ViewingSession {
            agent: "agent.ccor".to_owned(),
            kind,
            reason: reason.then(|| "rixe quai 1".to_owned()),
            intervention: reason.then(|| "int-7".to_owned()),
            origin: id(origin),
        }
    }

    #[test]
    fn a_reshared_camera_carries_the_narrower_of_both_restrictions() {
        let gateway = csu();
        let end = later();
        gateway.catalog_changed(&id(SNCF), &sncf_catalog(end));

        let catalog = gateway.catalog(&id(CCOR), &Feature::ALL);
        assert_eq!(catalog.len(), 1, "{catalog:?}");
        assert_eq!(catalog[0].id, cam("sncf/metz-ville/quai-1"));
        assert_eq!(
            catalog[0].restrictions,
            Restrictions {
                // The SNCF's on_request travels on, although our grant is live.
                on_request: true,
                // Ours name FURTHER and the CORG, the SNCF's FURTHER and the CCOR.
                onward: vec![id(FURTHER)],
                grant_end: Some(end),
            }
        );
        // Each feature its restrictions need, and `onward` for any re-shared camera.
        for missing in Feature::ALL {
            let declared: Vec<Feature> =
                Feature::ALL.into_iter().filter(|f| *f != missing).collect();
            assert!(
                gateway.catalog(&id(CCOR), &declared).is_empty(),
                "{missing:?} missing"
            );
        }
        // Never to a site the SNCF does not name, whatever our policy grants.
        assert!(gateway.catalog(&id(CORG), &Feature::ALL).is_empty());
        assert!(gateway.catalog(&id(SNCF), &Feature::ALL).is_empty());
        for (partner, camera) in [
            (CORG, "sncf/metz-ville/quai-1"),
            (CORG, "sncf/woippy/quai-1"),
            (CCOR, "sncf/woippy/quai-1"),
            (CCOR, "sncf/poste-de-commande/salle"),
        ] {
            assert_eq!(
                gateway.stream(&id(partner), &cam(camera), &[]).err(),
                Some(ErrorCode::NotGranted),
                "{partner} {camera}"
            );
        }
        let channel = gateway
            .stream(&id(CCOR), &cam("sncf/metz-ville/quai-1"), &[])
            .unwrap();
        assert_eq!(channel.camera(), &cam("sncf/metz-ville/quai-1"));
        match CatalogProvider::open_view(
            &gateway,
            &id(CORG),
            &cam("sncf/metz-ville/quai-1"),
            &session(CORG, AgentKind::Agent, true),
        ) {
            ViewDecision::Now(Err(ErrorCode::NotGranted)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_on_a_reshared_camera_meets_the_upstream_rules_too() {
        let gateway = csu();
        gateway.catalog_changed(&id(SNCF), &sncf_catalog(later()));
        let camera = cam("sncf/metz-ville/quai-1");
        let check = |origin: &str, kind: AgentKind, reason: bool| {
            gateway.check_view(&id(CCOR), &camera, &session(origin, kind, reason))
        };
        assert_eq!(check(CCOR, AgentKind::Agent, true), Ok(()));
        // Onward from the CCOR: both policies name FURTHER, only ours the CORG.
        assert_eq!(check(FURTHER, AgentKind::Agent, true), Ok(()));
        assert_eq!(
            check(CORG, AgentKind::Agent, true),
            Err(ErrorCode::NotGranted)
        );
        // The SNCF's on_request, enforced here too.
        assert_eq!(
            check(CCOR, AgentKind::Agent, false),
            Err(ErrorCode::NoIntervention)
        );
        assert_eq!(
            check(CCOR, AgentKind::Service, true),
            Err(ErrorCode::ServiceAccount)
        );
        // No link to carry the session to the SNCF: unavailable, never allowed here
        // alone.
        match CatalogProvider::open_view(
            &gateway,
            &id(CCOR),
            &camera,
            &session(CCOR, AgentKind::Agent, true),
        ) {
            ViewDecision::Now(Err(ErrorCode::CameraUnavailable)) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reshared_camera_goes_with_its_upstream_grant_or_catalog() {
        let gateway = csu();
        let camera = cam("sncf/metz-ville/quai-1");
        // The SNCF's grant has ended.
        let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(1);
        gateway.catalog_changed(&id(SNCF), &sncf_catalog(past));
        assert!(gateway.catalog(&id(CCOR), &Feature::ALL).is_empty());
        assert_eq!(
            gateway.stream(&id(CCOR), &camera, &[]).err(),
            Some(ErrorCode::NotGranted)
        );
        // Listed again, then the link to the SNCF drops: its catalog is empty.
        gateway.catalog_changed(&id(SNCF), &sncf_catalog(later()));
        assert_eq!(gateway.catalog(&id(CCOR), &Feature::ALL).len(), 1);
        gateway.catalog_changed(&id(SNCF), &[]);
        assert!(gateway.catalog(&id(CCOR), &Feature::ALL).is_empty());
        assert_eq!(
            gateway.check_view(&id(CCOR), &camera, &session(CCOR, AgentKind::Agent, true)),
            Err(ErrorCode::NotGranted)
        );
    }
}
