//! Site ids, camera ids and camera patterns: the names every other module speaks in.
//!
//! - [`SiteId`]: a site's DNS name (`csu.metz.example`), the name in its certificate.
//! - [`CameraId`]: a camera as its own site names it (`metz-ville/quai-1`), which is also
//!   the path in `rtsp://HOST:8554/<camera-id>` and `/whep/<camera-id>`. An importing site
//!   puts the partner's prefix in front ([`CameraId::with_prefix`]): SNCF's
//!   `metz-ville/quai-1` is `sncf/metz-ville/quai-1` at the CSU.
//! - [`CameraPattern`]: a glob over camera ids, as written in policies and imports
//!   (`metz-ville/**`); `*` is exactly one segment, `**` one or more.
//!
//! All three are parsed once at the edge ([`FromStr`], serde `Deserialize`) and cannot hold
//! an invalid value. Errors are [`IdError`]; [`IdError::is_too_long`] separates the
//! overlong case, which the RTSP and HTTP layers answer with 414 rather than 400/404.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest site id: the DNS limit on a name in text form (RFC 1035 §2.3.4, without the
/// final dot).
pub const SITE_ID_MAX_LEN: usize = 253;
/// Longest DNS label (RFC 1035 §2.3.4).
pub const SITE_LABEL_MAX_LEN: usize = 63;
/// Longest camera id or camera pattern, in bytes. Past it, RTSP and HTTP answer 414.
pub const CAMERA_ID_MAX_LEN: usize = 255;
/// Most segments in a camera id or a camera pattern.
pub const CAMERA_ID_MAX_SEGMENTS: usize = 8;

/// Why a site id, camera id or camera pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The text is empty.
    #[error("empty")]
    Empty,
    /// The text is longer than the limit, in bytes.
    #[error("too long: {len} bytes, at most {max}")]
    TooLong {
        /// Length of the refused text in bytes.
        len: usize,
        /// The limit that applies.
        max: usize,
    },
    /// A camera id or pattern has more segments than [`CAMERA_ID_MAX_SEGMENTS`].
    #[error("too many segments: {count}, at most {max}")]
    TooManySegments {
        /// Segments in the refused text (or in the result of a prefix join).
        count: usize,
        /// The limit that applies.
        max: usize,
    },
    /// An empty segment: a leading or trailing `/`, or `//`.
    #[error("empty segment at position {index} (leading, trailing or double `/`)")]
    EmptySegment {
        /// Zero-based position of the empty segment.
        index: usize,
    },
    /// A camera id segment outside `[a-z0-9][a-z0-9._-]*` (this refuses `.`, `..`,
    /// `%2e`, upper case and every other character).
    #[error("bad segment {segment:?}: expected [a-z0-9][a-z0-9._-]*")]
    BadSegment {
        /// The refused segment.
        segment: String,
    },
    /// A pattern segment that is neither a literal segment, `*` nor `**` (`a*`, `***`).
    #[error("bad pattern segment {segment:?}: expected a camera id segment, `*` or `**`")]
    BadPatternSegment {
        /// The refused segment.
        segment: String,
    },
    /// A site id with a single label: site ids are fully qualified DNS names.
    #[error("a site id needs at least two DNS labels (e.g. `csu.metz.example`)")]
    SingleLabel,
    /// A site id with a wildcard label (`*.metz.example`).
    #[error("wildcard label {label:?}: a site id names exactly one site")]
    Wildcard {
        /// The refused label.
        label: String,
    },
    /// A site id label that is empty, too long, not `[a-z0-9-]`, or starts or ends with `-`.
    #[error(
        "bad DNS label {label:?}: expected 1 to 63 characters of [a-z0-9-], \
         not starting or ending with `-`"
    )]
    BadLabel {
        /// The refused label.
        label: String,
    },
}

impl IdError {
    /// True when the id was refused for its length alone: the RTSP and HTTP layers answer
    /// 414 (URI too long) for it and 400/404 for every other error.
    pub fn is_too_long(&self) -> bool {
        matches!(self, IdError::TooLong { .. })
    }
}

/// A site id: the DNS name of one site (`csu.metz.example`), as carried in its certificate.
///
/// Lower-case labels of `[a-z0-9-]`, none starting or ending with `-`, at least two labels,
/// at most 253 characters, no wildcard, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

impl SiteId {
    /// The site id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn validate(s: &str) -> Result<(), IdError> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > SITE_ID_MAX_LEN {
            return Err(IdError::TooLong {
                len: s.len(),
                max: SITE_ID_MAX_LEN,
            });
        }
        let mut labels = 0;
        for label in s.split('.') {
            labels += 1;
            if label.contains('*') {
                return Err(IdError::Wildcard {
                    label: label.to_owned(),
                });
            }
            if !is_dns_label(label) {
                return Err(IdError::BadLabel {
                    label: label.to_owned(),
                });
            }
        }
        if labels < 2 {
            return Err(IdError::SingleLabel);
        }
        Ok(())
    }
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(&first), Some(&last)) => {
            bytes.len() <= SITE_LABEL_MAX_LEN
                && first != b'-'
                && last != b'-'
                && bytes
                    .iter()
                    .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        }
        _ => false,
    }
}

/// A camera id: segments of `[a-z0-9][a-z0-9._-]*` joined by `/`, at most 8 segments and
/// 255 bytes, case-sensitive (`metz-ville/quai-1`).
///
/// Empty segments (leading, trailing or double `/`), `.`, `..` and percent-encoding are
/// refused, so a camera id is always safe to use as a URL path and never escapes anything.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraId(String);

impl CameraId {
    /// The camera id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The segments of the id, in order.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Number of segments (at least one).
    pub fn segment_count(&self) -> usize {
        self.segments().count()
    }

    /// The id this camera has at a site that imports it under `prefix`: SNCF's
    /// `metz-ville/quai-1` under `sncf` is `sncf/metz-ville/quai-1`.
    ///
    /// Fails when the result would exceed the segment or length limits.
    pub fn with_prefix(&self, prefix: &CameraId) -> Result<CameraId, IdError> {
        join_checked(prefix, &self.0).map(CameraId)
    }

    /// The provider's own id for a camera imported under `prefix`, or `None` when this id
    /// is not strictly below `prefix` (segment by segment: `sncf-2/x` is not below `sncf`).
    pub fn strip_prefix(&self, prefix: &CameraId) -> Option<CameraId> {
        let rest = self.0.strip_prefix(prefix.as_str())?.strip_prefix('/')?;
        // A suffix of a valid id after a `/` boundary is itself a valid id.
        Some(CameraId(rest.to_owned()))
    }

    fn validate(s: &str) -> Result<(), IdError> {
        check_length_and_count(s)?;
        for (index, segment) in s.split('/').enumerate() {
            check_literal_segment(index, segment)?;
        }
        Ok(())
    }
}

/// A pattern over camera ids, as written in policies and import lists (`metz-ville/**`).
///
/// Segments are `/`-separated: a literal camera id segment matches itself, `*` matches
/// exactly one segment, `**` matches one or more segments, wherever it appears
/// (`**/entree`, `metz/**/ptz`). Same limits as camera ids: at most 8 segments, 255 bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CameraPattern {
    text: String,
    segments: Vec<PatternSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum PatternSegment {
    Literal(String),
    /// `*`: exactly one segment.
    One,
    /// `**`: one or more segments.
    OneOrMore,
}

impl CameraPattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when `camera` matches the pattern.
    ///
    /// Runs in O(pattern segments × id segments) whatever the number of `**`: a
    /// dynamic-programming pass, never backtracking.
    pub fn matches(&self, camera: &CameraId) -> bool {
        // Both sides are capped at CAMERA_ID_MAX_SEGMENTS; size for that without
        // allocating.
        let mut ids = [""; CAMERA_ID_MAX_SEGMENTS];
        let mut n = 0;
        for segment in camera.segments() {
            if n == CAMERA_ID_MAX_SEGMENTS {
                // Unreachable for a valid CameraId; refusing is the safe answer.
                return false;
            }
            ids[n] = segment;
            n += 1;
        }
        let ids = &ids[..n];
        // reach[j]: the pattern segments consumed so far match exactly ids[..j].
        let mut reach = [false; CAMERA_ID_MAX_SEGMENTS + 1];
        reach[0] = true;
        for segment in &self.segments {
            let mut next = [false; CAMERA_ID_MAX_SEGMENTS + 1];
            match segment {
                PatternSegment::Literal(lit) => {
                    for j in 0..n {
                        next[j + 1] = reach[j] && ids[j] == lit;
                    }
                }
                PatternSegment::One => {
                    next[1..=n].copy_from_slice(&reach[..n]);
                }
                PatternSegment::OneOrMore => {
                    // next[j] = some i < j with reach[i]: a running "seen" flag.
                    let mut seen = false;
                    for j in 1..=n {
                        seen |= reach[j - 1];
                        next[j] = seen;
                    }
                }
            }
            reach = next;
        }
        reach[n]
    }

    /// This pattern as seen from a site that imports under `prefix`: `metz-ville/**`
    /// under `sncf` is `sncf/metz-ville/**`.
    pub fn with_prefix(&self, prefix: &CameraId) -> Result<CameraPattern, IdError> {
        let text = join_checked(prefix, &self.text)?;
        let mut segments: Vec<PatternSegment> = prefix
            .segments()
            .map(|s| PatternSegment::Literal(s.to_owned()))
            .collect();
        segments.extend(self.segments.iter().cloned());
        Ok(CameraPattern { text, segments })
    }

    fn parse(s: &str) -> Result<CameraPattern, IdError> {
        check_length_and_count(s)?;
        let mut segments = Vec::new();
        for (index, segment) in s.split('/').enumerate() {
            segments.push(match segment {
                "*" => PatternSegment::One,
                "**" => PatternSegment::OneOrMore,
                _ if segment.contains('*') => {
                    return Err(IdError::BadPatternSegment {
                        segment: segment.to_owned(),
                    });
                }
                _ => {
                    check_literal_segment(index, segment)?;
                    PatternSegment::Literal(segment.to_owned())
                }
            });
        }
        Ok(CameraPattern {
            text: s.to_owned(),
            segments,
        })
    }
}

fn check_length_and_count(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    // Length first: an overlong request is answered 414 whatever else is wrong with it.
    if s.len() > CAMERA_ID_MAX_LEN {
        return Err(IdError::TooLong {
            len: s.len(),
            max: CAMERA_ID_MAX_LEN,
        });
    }
    let count = s.split('/').count();
    if count > CAMERA_ID_MAX_SEGMENTS {
        return Err(IdError::TooManySegments {
            count,
            max: CAMERA_ID_MAX_SEGMENTS,
        });
    }
    Ok(())
}

fn check_literal_segment(index: usize, segment: &str) -> Result<(), IdError> {
    let bytes = segment.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return Err(IdError::EmptySegment { index });
    };
    let ok = (first.is_ascii_lowercase() || first.is_ascii_digit())
        && rest.iter().all(|&b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(IdError::BadSegment {
            segment: segment.to_owned(),
        })
    }
}

/// `prefix/rest`, checked against the camera id limits (both parts are already valid).
fn join_checked(prefix: &CameraId, rest: &str) -> Result<String, IdError> {
    let joined = format!("{}/{}", prefix.as_str(), rest);
    if joined.len() > CAMERA_ID_MAX_LEN {
        return Err(IdError::TooLong {
            len: joined.len(),
            max: CAMERA_ID_MAX_LEN,
        });
    }
    let count = joined.split('/').count();
    if count > CAMERA_ID_MAX_SEGMENTS {
        return Err(IdError::TooManySegments {
            count,
            max: CAMERA_ID_MAX_SEGMENTS,
        });
    }
    Ok(joined)
}

macro_rules! string_id_impls {
    ($ty:ident, $validate:expr) => {
        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                $validate(s)?;
                Ok($ty(s.to_owned()))
            }
        }

        impl TryFrom<String> for $ty {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                $validate(&s)?;
                Ok($ty(s))
            }
        }

        impl From<$ty> for String {
            fn from(id: $ty) -> String {
                id.0
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        // Sound: Eq, Ord and Hash are derived from the single String field, so they agree
        // with str's.
        impl Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id_impls!(SiteId, SiteId::validate);
string_id_impls!(CameraId, CameraId::validate);

impl FromStr for CameraPattern {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        CameraPattern::parse(s)
    }
}

impl TryFrom<String> for CameraPattern {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        CameraPattern::parse(&s)
    }
}

impl From<CameraPattern> for String {
    fn from(p: CameraPattern) -> String {
        p.text
    }
}

impl fmt::Display for CameraPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for CameraPattern {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam(s: &str) -> CameraId {
        s.parse().unwrap()
    }

    fn pat(s: &str) -> CameraPattern {
        s.parse().unwrap()
    }

    #[test]
    fn site_ids_of_the_metz_topology_parse() {
        for s in [
            "sncf.metz.example",
            "csu.metz.example",
            "ccor.metz.example",
            "corg.gendarmerie.example",
            "police.interieur.example",
            "a.b",
            "0.9",
            "x-1.y--z.example",
        ] {
            let id: SiteId = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
        }
    }

    #[test]
    fn site_ids_refused_with_a_precise_error() {
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("localhost", IdError::SingleLabel),
            ("*.metz.example", IdError::Wildcard { label: "*".into() }),
            (
                "c*u.metz.example",
                IdError::Wildcard {
                    label: "c*u".into(),
                },
            ),
            (
                "CSU.metz.example",
                IdError::BadLabel {
                    label: "CSU".into(),
                },
            ),
            ("csu.metz.example.", IdError::BadLabel { label: "".into() }),
            (".metz.example", IdError::BadLabel { label: "".into() }),
            ("csu..example", IdError::BadLabel { label: "".into() }),
            (
                "-csu.metz.example",
                IdError::BadLabel {
                    label: "-csu".into(),
                },
            ),
            (
                "csu-.metz.example",
                IdError::BadLabel {
                    label: "csu-".into(),
                },
            ),
            (
                "csu_1.metz.example",
                IdError::BadLabel {
                    label: "csu_1".into(),
                },
            ),
            (
                "csu.metz.example:4433",
                IdError::BadLabel {
                    label: "example:4433".into(),
                },
            ),
            (
                "csé.metz.example",
                IdError::BadLabel {
                    label: "csé".into(),
                },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<SiteId>().as_ref(), Err(want), "{input:?}");
        }
    }

    #[test]
    fn site_id_length_limits() {
        let label63 = "a".repeat(63);
        let ok = format!("{label63}.example");
        assert!(ok.parse::<SiteId>().is_ok());
        let label64 = "a".repeat(64);
        assert_eq!(
            format!("{label64}.example").parse::<SiteId>(),
            Err(IdError::BadLabel { label: label64 })
        );
        // 4 labels of 63 + 3 dots = 255 > 253; 3 of 63 + "a.b" = 63*3+2+1+... build exactly.
        let at_limit = format!("{0}.{0}.{0}.{1}", label63, "a".repeat(61));
        assert_eq!(at_limit.len(), 253);
        assert!(at_limit.parse::<SiteId>().is_ok());
        let over = format!("{at_limit}a");
        assert_eq!(
            over.parse::<SiteId>(),
            Err(IdError::TooLong { len: 254, max: 253 })
        );
        assert!(over.parse::<SiteId>().unwrap_err().is_too_long());
    }

    #[test]
    fn camera_ids_of_the_metz_topology_parse() {
        for s in [
            "metz-ville/quai-1",
            "sncf/metz-ville/quai-1",
            "metz/place-de-la-republique/ptz.2",
            "woippy/parvis",
            "0",
            "a_b/c.d/e-f/9",
            "a..b",
            "a/b/c/d/e/f/g/h",
        ] {
            let id = cam(s);
            assert_eq!(id.as_str(), s);
            assert_eq!(id.to_string(), s);
        }
        assert_eq!(cam("a/b/c/d/e/f/g/h").segment_count(), 8);
        assert_eq!(
            cam("metz-ville/quai-1").segments().collect::<Vec<_>>(),
            ["metz-ville", "quai-1"]
        );
    }

    #[test]
    fn camera_ids_refused_with_a_precise_error() {
        let bad = |s: &str| IdError::BadSegment { segment: s.into() };
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            ("/metz", IdError::EmptySegment { index: 0 }),
            ("metz/", IdError::EmptySegment { index: 1 }),
            ("metz//cam", IdError::EmptySegment { index: 1 }),
            ("/", IdError::EmptySegment { index: 0 }),
            ("..", bad("..")),
            ("metz/../sncf", bad("..")),
            ("metz/./cam", bad(".")),
            ("%2e%2e/cam", bad("%2e%2e")),
            ("metz/%2E", bad("%2E")),
            ("Metz/cam", bad("Metz")),
            ("metz/Cam", bad("Cam")),
            ("metz/-cam", bad("-cam")),
            ("metz/_cam", bad("_cam")),
            (".hidden", bad(".hidden")),
            ("metz/cam 1", bad("cam 1")),
            ("metz\\cam", bad("metz\\cam")),
            ("metz/cam?x=1", bad("cam?x=1")),
            ("metz/track=1", bad("track=1")),
            ("metz/*", bad("*")),
            ("métz", bad("métz")),
            (
                "a/b/c/d/e/f/g/h/i",
                IdError::TooManySegments { count: 9, max: 8 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<CameraId>().as_ref(), Err(want), "{input:?}");
            assert!(!want.is_too_long());
        }
    }

    #[test]
    fn overlong_camera_ids_are_reported_separately() {
        let at_limit = "a".repeat(255);
        assert!(at_limit.parse::<CameraId>().is_ok());
        let over = "a".repeat(256);
        let err = over.parse::<CameraId>().unwrap_err();
        assert_eq!(err, IdError::TooLong { len: 256, max: 255 });
        assert!(err.is_too_long());
        // Length is checked before anything else: a long garbage id is still "too long".
        let err = "../".repeat(200).parse::<CameraId>().unwrap_err();
        assert!(err.is_too_long(), "{err}");
        // ... and an overlong pattern too.
        assert!(
            "*/".repeat(200)
                .parse::<CameraPattern>()
                .unwrap_err()
                .is_too_long()
        );
    }

    #[test]
    fn camera_ids_are_case_sensitive_values() {
        assert_ne!(cam("metz/a"), cam("metz/a1"));
        assert!("metz/A".parse::<CameraId>().is_err());
    }

    #[test]
    fn serde_goes_through_validation() {
        #[derive(Deserialize, Serialize, Debug, PartialEq)]
        struct T {
            site: SiteId,
            camera: CameraId,
            pattern: CameraPattern,
        }
        let t: T = toml::from_str(
            "site = \"sncf.metz.example\"\ncamera = \"metz-ville/quai-1\"\npattern = \"metz-ville/**\"\n",
        )
        .unwrap();
        assert_eq!(t.site.as_str(), "sncf.metz.example");
        assert_eq!(t.camera.as_str(), "metz-ville/quai-1");
        assert!(t.pattern.matches(&t.camera));
        // Round trip through the text form.
        let text = toml::to_string(&t).unwrap();
        assert_eq!(toml::from_str::<T>(&text).unwrap(), t);

        let err = toml::from_str::<T>(
            "site = \"sncf.metz.example\"\ncamera = \"metz/../x\"\npattern = \"**\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bad segment \"..\""), "{err}");
        let err = toml::from_str::<T>("site = \"SNCF\"\ncamera = \"metz/x\"\npattern = \"**\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("bad DNS label"), "{err}");
        let err =
            toml::from_str::<T>("site = \"a.b\"\ncamera = \"metz/x\"\npattern = \"metz/**x\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("bad pattern segment"), "{err}");
    }

    #[test]
    fn borrow_allows_lookup_by_str() {
        let mut set = std::collections::HashSet::new();
        set.insert(cam("metz/a"));
        assert!(set.contains("metz/a"));
        assert!(!set.contains("metz/b"));
    }

    #[test]
    fn patterns_refused_with_a_precise_error() {
        let cases: &[(&str, IdError)] = &[
            ("", IdError::Empty),
            (
                "metz/***",
                IdError::BadPatternSegment {
                    segment: "***".into(),
                },
            ),
            (
                "metz/quai-*",
                IdError::BadPatternSegment {
                    segment: "quai-*".into(),
                },
            ),
            ("metz//**", IdError::EmptySegment { index: 1 }),
            ("/**", IdError::EmptySegment { index: 0 }),
            ("**/", IdError::EmptySegment { index: 1 }),
            (
                "../**",
                IdError::BadSegment {
                    segment: "..".into(),
                },
            ),
            (
                "*/*/*/*/*/*/*/*/*",
                IdError::TooManySegments { count: 9, max: 8 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                input.parse::<CameraPattern>().as_ref(),
                Err(want),
                "{input:?}"
            );
        }
    }

    /// (pattern, camera, expected)
    const MATCH_TABLE: &[(&str, &str, bool)] = &[
        // Literals.
        ("metz-ville/quai-1", "metz-ville/quai-1", true),
        ("metz-ville/quai-1", "metz-ville/quai-2", false),
        ("metz-ville/quai-1", "metz-ville/quai-1/ptz", false),
        ("metz-ville/quai-1", "metz-ville", false),
        // `*`: exactly one segment.
        ("metz-ville/*", "metz-ville/quai-1", true),
        ("metz-ville/*", "metz-ville", false),
        ("metz-ville/*", "metz-ville/quai-1/ptz", false),
        ("*", "metz", true),
        ("*", "metz/a", false),
        ("*/quai-1", "metz-ville/quai-1", true),
        ("*/quai-1", "metz-nord/quai-1", true),
        ("*/quai-1", "metz-nord/quai-2", false),
        ("*/*", "a/b", true),
        ("*/*", "a", false),
        // `**`: one or more segments at any depth.
        ("metz-ville/**", "metz-ville/quai-1", true),
        ("metz-ville/**", "metz-ville/hall/entree/ptz", true),
        ("metz-ville/**", "metz-ville", false),
        ("metz-ville/**", "metz-villex/quai-1", false),
        ("metz-ville/**", "metz-nord/quai-1", false),
        ("**", "a", true),
        ("**", "a/b/c/d/e/f/g/h", true),
        ("**/entree", "metz-ville/hall/entree", true),
        ("**/entree", "entree", false),
        ("**/entree", "metz-ville/entree/ptz", false),
        ("metz/**/ptz", "metz/a/ptz", true),
        ("metz/**/ptz", "metz/a/b/c/ptz", true),
        ("metz/**/ptz", "metz/ptz", false),
        ("metz/**/ptz", "metz/a/ptz/x", false),
        ("**/**", "a", false),
        ("**/**", "a/b", true),
        ("**/**", "a/b/c", true),
        ("**/x/**", "a/x/b", true),
        ("**/x/**", "x/b", false),
        ("**/x/**", "a/b/x/c/d", true),
        ("**/x/**", "a/b/c/d", false),
        ("*/**", "a", false),
        ("*/**", "a/b/c", true),
        // Prefixed imports at the CSU.
        ("sncf/metz-ville/**", "sncf/metz-ville/quai-1", true),
        ("sncf/metz-ville/**", "sncf/woippy/parvis", false),
        ("sncf/metz-ville/**", "metz-ville/quai-1", false),
    ];

    #[test]
    fn pattern_matching_table() {
        for &(p, c, want) in MATCH_TABLE {
            assert_eq!(pat(p).matches(&cam(c)), want, "{p} ~ {c}");
            assert_eq!(
                naive_match(p, c),
                want,
                "reference matcher disagrees: {p} ~ {c}"
            );
        }
    }

    /// Straightforward backtracking reference matcher (exponential, fine for tests).
    fn naive_match(pattern: &str, camera: &str) -> bool {
        fn go(p: &[&str], c: &[&str]) -> bool {
            match p.split_first() {
                None => c.is_empty(),
                Some((&"**", rest)) => (1..=c.len()).any(|k| go(rest, &c[k..])),
                Some((&"*", rest)) => !c.is_empty() && go(rest, &c[1..]),
                Some((lit, rest)) => c.first() == Some(lit) && go(rest, &c[1..]),
            }
        }
        let p: Vec<&str> = pattern.split('/').collect();
        let c: Vec<&str> = camera.split('/').collect();
        go(&p, &c)
    }

    #[test]
    fn pattern_matching_agrees_with_reference_on_all_small_cases() {
        // Every pattern of up to 4 segments over {a, *, **} against every id of up to 5
        // segments over {a, b}.
        let mut patterns = vec![String::new()];
        let mut all_patterns = Vec::new();
        for _ in 0..4 {
            let mut next = Vec::new();
            for p in &patterns {
                for s in ["a", "*", "**"] {
                    let q = if p.is_empty() {
                        s.to_owned()
                    } else {
                        format!("{p}/{s}")
                    };
                    all_patterns.push(q.clone());
                    next.push(q);
                }
            }
            patterns = next;
        }
        let mut ids = vec![String::new()];
        let mut all_ids = Vec::new();
        for _ in 0..5 {
            let mut next = Vec::new();
            for c in &ids {
                for s in ["a", "b"] {
                    let d = if c.is_empty() {
                        s.to_owned()
                    } else {
                        format!("{c}/{s}")
                    };
                    all_ids.push(d.clone());
                    next.push(d);
                }
            }
            ids = next;
        }
        let mut positives = 0;
        for p in &all_patterns {
            let compiled = pat(p);
            for c in &all_ids {
                let want = naive_match(p, c);
                positives += usize::from(want);
                assert_eq!(compiled.matches(&cam(c)), want, "{p} ~ {c}");
            }
        }
        assert!(
            positives > 100,
            "the table must exercise matches, got {positives}"
        );
    }

    #[test]
    fn pattern_matching_has_no_exponential_blow_up() {
        // Backtracking takes C(n, k) steps on this; the DP takes 8 × 8.
        let p = pat("**/**/**/**/**/**/**/b");
        let c = cam("a/a/a/a/a/a/a/a");
        let start = std::time::Instant::now();
        for _ in 0..10_000 {
            assert!(!p.matches(&c));
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn metz_grants_select_the_right_cameras() {
        // SNCF → CSU grant 1 and grant 2, in SNCF's ids.
        let grant1 = [pat("metz-ville/**"), pat("metz-nord/**")];
        let grant2 = [
            pat("woippy/**"),
            pat("ars-sur-moselle/**"),
            pat("peltre/**"),
        ];
        let any = |g: &[CameraPattern], c: &str| g.iter().any(|p| p.matches(&cam(c)));
        assert!(any(&grant1, "metz-ville/quai-1"));
        assert!(any(&grant1, "metz-nord/parvis"));
        assert!(!any(&grant1, "woippy/parvis"));
        assert!(any(&grant2, "woippy/parvis"));
        assert!(any(&grant2, "ars-sur-moselle/quai-2"));
        assert!(!any(&grant2, "metz-ville/quai-1"));
        // CSU → CCOR, in the CSU's ids (SNCF cameras under the `sncf` prefix).
        let ccor = [
            pat("metz/**"),
            pat("sncf/metz-ville/**"),
            pat("sncf/metz-nord/**"),
        ];
        assert!(any(&ccor, "metz/place-saint-louis"));
        assert!(any(&ccor, "sncf/metz-ville/quai-1"));
        assert!(!any(&ccor, "sncf/woippy/parvis"));
        assert!(!any(&ccor, "sncf/peltre/quai-1"));
        assert!(!any(&ccor, "marly/mairie"));
        // CSU → CORG: city cameras only.
        let corg = [
            pat("metz/**"),
            pat("marly/**"),
            pat("moulins-les-metz/**"),
            pat("noisseville/**"),
            pat("nouilly/**"),
        ];
        assert!(any(&corg, "marly/mairie"));
        assert!(!any(&corg, "sncf/metz-ville/quai-1"));
    }

    #[test]
    fn prefixes_join_and_strip_segment_wise() {
        let sncf = cam("sncf");
        let local = cam("metz-ville/quai-1");
        let imported = local.with_prefix(&sncf).unwrap();
        assert_eq!(imported.as_str(), "sncf/metz-ville/quai-1");
        assert_eq!(imported.strip_prefix(&sncf), Some(local.clone()));
        // Not a segment boundary.
        assert_eq!(cam("sncf-2/metz-ville").strip_prefix(&sncf), None);
        assert_eq!(cam("sncfx").strip_prefix(&sncf), None);
        // Nothing left.
        assert_eq!(cam("sncf").strip_prefix(&sncf), None);
        // Another partner.
        assert_eq!(cam("ratp/x").strip_prefix(&sncf), None);
        // Multi-segment prefixes.
        let deep = cam("partners/sncf");
        assert_eq!(
            cam("partners/sncf/woippy/parvis").strip_prefix(&deep),
            Some(cam("woippy/parvis"))
        );
        assert_eq!(cam("partners/sncfx/woippy").strip_prefix(&deep), None);

        // Patterns follow the same rule.
        let p = pat("metz-ville/**").with_prefix(&sncf).unwrap();
        assert_eq!(p.as_str(), "sncf/metz-ville/**");
        assert_eq!(p, pat("sncf/metz-ville/**"));
        assert!(p.matches(&imported));
        assert!(!p.matches(&local));
    }

    #[test]
    fn prefix_join_respects_limits() {
        let seven = cam("a/b/c/d/e/f/g");
        assert_eq!(
            seven.with_prefix(&cam("p/q")),
            Err(IdError::TooManySegments { count: 9, max: 8 })
        );
        assert_eq!(seven.with_prefix(&cam("p")).unwrap().segment_count(), 8);
        // "sncf/" + 250 bytes = 255: at the limit; one more byte is too long.
        assert!(cam(&"a".repeat(250)).with_prefix(&cam("sncf")).is_ok());
        let err = cam(&"a".repeat(251)).with_prefix(&cam("sncf")).unwrap_err();
        assert_eq!(err, IdError::TooLong { len: 256, max: 255 });
        assert!(err.is_too_long());
        assert!(pat("*/*/*/*/*/*/*/*").with_prefix(&cam("p")).is_err());
    }
}
