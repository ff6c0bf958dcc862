//! The gateway's shared state, and the traits through which the adapters reach it:
//! [`CameraDirectory`] for the RTSP server, [`CatalogProvider`] and [`Importer`] for
//! the link. Every cross-boundary decision goes through [`policy::evaluate`] here.

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
use crate::link::{CatalogProvider, Importer, LinkHandle, ViewEnd, ViewGuard};
use crate::policy::{self, AgentKind, Decision, LastRefusal, Mode, VerifiedPolicy, ViewingSession};
use crate::rtsp::{CameraDirectory, Mount, ViewRefusal, Viewer};

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
    /// The access journal; `None` when it could not be opened: then every viewing
    /// session is refused (`JOURNAL_UNAVAILABLE`).
    journal: Option<Journal>,
    /// Viewing sessions partners opened on our cameras, for their `session_ended`
    /// records. Sessions with equal keys are interchangeable, so a list each.
    provided: Mutex<HashMap<ProvidedKey, Vec<OpenSession>>>,
}

type ProvidedKey = (SiteId, CameraId, String, SiteId);

/// A journaled viewing session still open.
struct OpenSession {
    id: String,
    started: std::time::Instant,
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
            journal,
            provided: Mutex::new(HashMap::new()),
        }
    }

    pub fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// Appends a record; a failure means the event may not happen (a session is
    /// refused), so it maps to `JOURNAL_UNAVAILABLE`.
    fn journal_append(&self, event: Event) -> Result<(), ErrorCode> {
        let Some(journal) = &self.journal else {
            return Err(ErrorCode::JournalUnavailable);
        };
        journal.append(event).map(|_| ()).map_err(|error| {
            tracing::error!(%error, "journal write failed: viewing sessions are refused");
            ErrorCode::JournalUnavailable
        })
    }

    /// Journals a session's refusal; a journal failure changes nothing (it is refused).
    fn journal_refusal(&self, viewing: Viewing, refusal: ErrorCode) {
        let _ = self.journal_append(Event::SessionRefused(SessionRefused {
            viewing,
            refusal: refusal.as_str().to_owned(),
        }));
    }

    /// Puts an admitted policy in force; the link re-checks every stream and viewing
    /// session and narrows each partner's catalog.
    pub fn apply_policy(&self, policy: Arc<VerifiedPolicy>) {
        *write(&self.policy) = Some(policy);
        *write(&self.policy_refusal) = None;
        if let Some(link) = self.link.get() {
            link.policy_changed();
        }
    }

    /// Records a refused policy: the one in force (or none) stays.
    pub fn policy_refused(&self, refusal: LastRefusal) {
        *write(&self.policy_refusal) = Some(refusal);
    }

    /// Re-evaluates everything against the policy in force (hours windows, validity).
    pub fn policy_clock_tick(&self) {
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
        let journal = self.journal.as_ref().map_or_else(
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

    /// Decides whether `partner` may have `camera` (our id), optionally for a viewing
    /// session, under the policy in force now.
    fn decide(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: Option<&ViewingSession>,
    ) -> Result<(Arc<VerifiedPolicy>, usize), ErrorCode> {
        // Only our own cameras are shared: imported ones are not re-shared until onward
        // rules are enforced end to end.
        if !self.local.contains_key(camera) {
            return Err(ErrorCode::NotGranted);
        }
        let policy = self.policy();
        let decision = policy::evaluate(
            policy.as_deref().map(|verified| &verified.policy),
            &self.site,
            partner,
            camera,
            session,
            jiff::Timestamp::now(),
        );
        let grant = match decision {
            Decision::Allow { grant, .. } => grant,
            Decision::Deny(reason) => return Err(ErrorCode::from(reason)),
        };
        policy
            .map(|policy| (policy, grant))
            .ok_or(ErrorCode::NoPolicy)
    }
}

/// Held by an RTSP session while it plays: the session at the camera's site (for an
/// imported camera, closed on drop), and the journal record to end.
pub(super) struct ViewHold {
    #[expect(dead_code, reason = "held for its Drop, which sends ViewClose")]
    remote: Option<ViewGuard>,
    journal: Option<Journal>,
    viewing: Viewing,
    started: std::time::Instant,
}

impl Drop for ViewHold {
    fn drop(&mut self) {
        journal_end(self.journal.as_ref(), &self.viewing, self.started, "closed");
    }
}

impl CameraDirectory for Gateway {
    type Guard = ViewHold;

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
        let mut viewing = Viewing {
            session: new_session_id(),
            role: SessionRole::Local,
            camera: camera.to_string(),
            partner: None,
            origin: self.site.to_string(),
            agent: viewer.name.clone(),
            agent_kind: viewer_kind(viewer.kind),
            reason: None,
            intervention: None,
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
                reason: None,
                intervention: None,
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
        Ok(ViewHold {
            remote,
            journal: self.journal.clone(),
            viewing,
            started: std::time::Instant::now(),
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
            .filter_map(|(id, local)| {
                let (policy, grant) = self.decide(partner, id, None).ok()?;
                let grant = policy.policy.grants.get(grant)?;
                let restrictions = Restrictions {
                    on_request: grant.mode == Mode::OnRequest,
                    onward: grant.onward.clone(),
                    grant_end: None,
                };
                // A restriction the peer would not enforce withholds the camera.
                let needs = [
                    (restrictions.on_request, Feature::OnRequest),
                    (!restrictions.onward.is_empty(), Feature::Onward),
                ];
                if needs
                    .iter()
                    .any(|(needed, feature)| *needed && !features.contains(feature))
                {
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
            })
            .collect();
        cameras.sort_by(|a, b| a.id.cmp(&b.id));
        cameras
    }

    fn stream(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        active: &[CameraId],
    ) -> Result<Channel, ErrorCode> {
        let (policy, grant) = self.decide(partner, camera, None)?;
        if let Some(max) = policy.policy.grants.get(grant).and_then(|g| g.max_streams) {
            let grant = &policy.policy.grants[grant];
            let held = active
                .iter()
                .filter(|held| *held != camera && grant.cameras.iter().any(|p| p.matches(held)))
                .count();
            if held >= max as usize {
                return Err(ErrorCode::MaxStreams);
            }
        }
        self.local
            .get(camera)
            .map(|local| local.channel.clone())
            .ok_or(ErrorCode::NotGranted)
    }

    fn open_view(
        &self,
        partner: &SiteId,
        camera: &CameraId,
        session: &ViewingSession,
    ) -> Result<(), ErrorCode> {
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
        let (policy, grant) = match decided {
            Ok(allowed) => allowed,
            Err(code) => {
                tracing::info!(
                    %camera, %partner, agent = %session.agent, kind = session.kind.as_str(),
                    origin = %session.origin, refusal = code.as_str(), "viewing session refused"
                );
                self.journal_refusal(viewing, code);
                return Err(code);
            }
        };
        let basis = policy.policy.grants[grant].basis.clone();
        viewing.grant = u32::try_from(grant).ok();
        viewing.basis = Some(basis.clone());
        // Journaled before the first packet: no record, no viewing.
        if let Err(code) = self.journal_append(Event::SessionOpened(viewing.clone())) {
            self.journal_refusal(viewing, code);
            return Err(code);
        }
        tracing::info!(
            %camera, %partner, agent = %session.agent, kind = session.kind.as_str(),
            reason = session.reason.as_deref().unwrap_or(""), origin = %session.origin,
            %basis, session = %viewing.session, "viewing session opened"
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
                started: std::time::Instant::now(),
            });
        Ok(())
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
        journal_end(self.journal.as_ref(), &viewing, open.started, end.as_str());
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
        self.catalogs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(partner.clone(), cameras.to_vec());
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
fn journal_end(
    journal: Option<&Journal>,
    viewing: &Viewing,
    started: std::time::Instant,
    why: &str,
) {
    let ended = Event::SessionEnded(SessionEnded {
        session: viewing.session.clone(),
        camera: viewing.camera.clone(),
        partner: viewing.partner.clone(),
        origin: viewing.origin.clone(),
        agent: viewing.agent.clone(),
        intervention: viewing.intervention.clone(),
        duration_ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
        packets: 0,
        bytes: 0,
        why: why.to_owned(),
    });
    let written = journal.map(|journal| journal.append(ended));
    if !matches!(written, Some(Ok(_))) {
        tracing::error!(session = %viewing.session, "the end of a viewing session could not be journaled");
    }
}
