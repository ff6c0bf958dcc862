//! The key schema: every section and key a configuration file may hold, with its TOML
//! type and built-in default, and the two checks made against it before serde sees
//! anything:
//!
//! - [`walk_file`] walks the parsed TOML document, reports every unknown section or key and
//!   every value of the wrong TOML type (serde's `deny_unknown_fields` would stop at the
//!   first one), drops them, fills the defaults of `[[array]]` entries, records the line
//!   of every key, and hands the rest over as `config` values;
//! - [`env_overrides`] turns `PASSERELLE__SECTION__KEY` variables into typed overrides and
//!   refuses the unknown ones.
//!
//! The schema is also the list the documentation and the example file are tested against.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::ops::Range;

use config::{Map, Value, ValueKind};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::Problems;
use super::file::FileConfig;

/// Prefix of the environment variables that override configuration keys.
pub(crate) const ENV_PREFIX: &str = "PASSERELLE__";
/// Separator between prefix, section and key in an environment variable name.
const ENV_SEPARATOR: &str = "__";

/// What a key's value is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A TOML string with a key-specific syntax (address, port range, enum, id...).
    Text,
    /// A TOML string holding a duration such as `"10s"` or `"1m30s"`.
    Duration,
    /// A TOML string holding a file or directory path.
    Path,
    /// A TOML integer.
    Integer,
    /// A TOML boolean.
    Bool,
    /// A TOML array of strings.
    List,
}

impl Kind {
    /// How a problem message names what was expected.
    fn expected(self) -> &'static str {
        match self {
            Kind::Text => "a string",
            Kind::Duration => "a duration string such as \"10s\" or \"1m30s\"",
            Kind::Path => "a path string",
            Kind::Integer => "an integer",
            Kind::Bool => "true or false",
            Kind::List => "a list of strings",
        }
    }
}

/// A key's built-in default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DefaultValue {
    Text(&'static str),
    Integer(i64),
    Bool(bool),
    EmptyList,
}

impl DefaultValue {
    fn to_value(self) -> Value {
        match self {
            DefaultValue::Text(text) => Value::new(None, text),
            DefaultValue::Integer(n) => Value::new(None, n),
            DefaultValue::Bool(b) => Value::new(None, b),
            DefaultValue::EmptyList => Value::new(None, Vec::<Value>::new()),
        }
    }
}

/// One key of a section.
#[derive(Debug)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// `None`: required, or optional with no value (validation knows which).
    pub(crate) default: Option<DefaultValue>,
}

/// One section: a table (`[quic]`) or an array of tables (`[[camera]]`).
#[derive(Debug)]
pub(crate) struct Section {
    pub(crate) name: &'static str,
    pub(crate) repeated: bool,
    pub(crate) keys: &'static [Key],
}

impl Section {
    fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|key| key.name == name)
    }

    fn header(&self) -> String {
        if self.repeated {
            format!("[[{}]]", self.name)
        } else {
            format!("[{}]", self.name)
        }
    }
}

const fn key(name: &'static str, kind: Kind) -> Key {
    Key {
        name,
        kind,
        default: None,
    }
}

const fn text(name: &'static str, default: &'static str) -> Key {
    Key {
        name,
        kind: Kind::Text,
        default: Some(DefaultValue::Text(default)),
    }
}

const fn duration(name: &'static str, default: &'static str) -> Key {
    Key {
        name,
        kind: Kind::Duration,
        default: Some(DefaultValue::Text(default)),
    }
}

const fn integer(name: &'static str, default: i64) -> Key {
    Key {
        name,
        kind: Kind::Integer,
        default: Some(DefaultValue::Integer(default)),
    }
}

const fn boolean(name: &'static str, default: bool) -> Key {
    Key {
        name,
        kind: Kind::Bool,
        default: Some(DefaultValue::Bool(default)),
    }
}

const fn list(name: &'static str) -> Key {
    Key {
        name,
        kind: Kind::List,
        default: Some(DefaultValue::EmptyList),
    }
}

/// Every section and key, in the order of the documentation.
///
/// The defaults here are the only copy: the loader gives them to the `config` crate
/// (tables) or fills them into each entry (arrays of tables), and tests check that
/// `docs/configuration.md` and `deploy/passerelle.example.toml` name every key.
pub(crate) const SECTIONS: &[Section] = &[
    Section {
        name: "site",
        repeated: false,
        keys: &[key("id", Kind::Text), key("state_dir", Kind::Path)],
    },
    Section {
        name: "tls",
        repeated: false,
        keys: &[
            key("cert", Kind::Path),
            key("key", Kind::Path),
            key("ca", Kind::Path),
            key("crl", Kind::Path),
        ],
    },
    Section {
        name: "quic",
        repeated: false,
        keys: &[
            text("listen", "0.0.0.0:4433"),
            duration("keep_alive", "2s"),
            duration("idle_timeout", "8s"),
            integer("initial_mtu", 1200),
            integer("max_mtu", 1452),
            boolean("mtu_discovery", true),
            text("dscp", "AF41"),
            text("media_transport", "datagram"),
        ],
    },
    Section {
        name: "camera",
        repeated: true,
        keys: &[
            key("id", Kind::Text),
            key("url", Kind::Text),
            key("credentials_file", Kind::Path),
            boolean("on_demand", true),
            text("transport", "tcp"),
            duration("linger", "30s"),
            duration("probe_interval", "60s"),
        ],
    },
    Section {
        name: "partner",
        repeated: true,
        keys: &[
            key("id", Kind::Text),
            list("addresses"),
            key("ca", Kind::Path),
            boolean("allow_any_ca", false),
            key("prefix", Kind::Text),
            list("import"),
            key("max_bitrate_kbps", Kind::Integer),
        ],
    },
    Section {
        name: "policy",
        repeated: false,
        keys: &[
            key("file", Kind::Path),
            list("trusted_keys"),
            integer("signatures_required", 1),
        ],
    },
    Section {
        name: "user",
        repeated: true,
        keys: &[
            key("name", Kind::Text),
            key("kind", Kind::Text),
            key("password_file", Kind::Path),
            key("ha1_file", Kind::Path),
            key("token_file", Kind::Path),
            key("cameras", Kind::List),
        ],
    },
    Section {
        name: "rtsp",
        repeated: false,
        keys: &[
            text("listen", "0.0.0.0:8554"),
            text("udp_ports", "30000-30999"),
            duration("session_timeout", "60s"),
            duration("describe_timeout", "8s"),
        ],
    },
    Section {
        name: "http",
        repeated: false,
        keys: &[
            text("listen", "0.0.0.0:8443"),
            // Default computed from `listen` (on unless loopback), so not in the table.
            key("tls", Kind::Bool),
            key("cert", Kind::Path),
            key("key", Kind::Path),
            list("cors_origins"),
        ],
    },
    Section {
        name: "webrtc",
        repeated: false,
        keys: &[
            text("udp_ports", "31000-31999"),
            key("public_address", Kind::Text),
            integer("max_sessions", 64),
        ],
    },
    Section {
        name: "management",
        repeated: false,
        keys: &[text("listen", "127.0.0.1:9464")],
    },
    Section {
        name: "audit",
        repeated: false,
        keys: &[
            key("dir", Kind::Path),
            key("retention_days", Kind::Integer),
            key("journal_key", Kind::Path),
        ],
    },
    Section {
        name: "channel",
        repeated: false,
        keys: &[
            integer("keyframe_cache_max_bytes", 8 * 1024 * 1024),
            duration("keyframe_cache_max_duration", "4s"),
            integer("sink_queue_packets", 512),
            duration("keyframe_request_interval", "1s"),
        ],
    },
];

fn section(name: &str) -> Option<&'static Section> {
    SECTIONS.iter().find(|section| section.name == name)
}

/// The defaults of the table sections, as `config` keys (`quic.listen`) and values.
pub(crate) fn table_defaults() -> impl Iterator<Item = (String, Value)> {
    SECTIONS
        .iter()
        .filter(|section| !section.repeated)
        .flat_map(|section| {
            section.keys.iter().filter_map(move |key| {
                let default = key.default?;
                Some((format!("{}.{}", section.name, key.name), default.to_value()))
            })
        })
}

/// Layers the built-in defaults, the checked file and the environment overrides with the
/// `config` crate, and deserializes the result.
///
/// After [`walk_file`] and [`env_overrides`] this only fails if the schema and
/// [`FileConfig`] disagree, which the tests check.
pub(crate) fn layer(
    file: Map<String, Value>,
    overrides: &[EnvOverride],
) -> Result<FileConfig, config::ConfigError> {
    let mut builder = config::Config::builder();
    for (key, value) in table_defaults() {
        builder = builder.set_default(key, value)?;
    }
    builder = builder.add_source(CheckedFile(file));
    for o in overrides {
        builder = builder.set_override(&o.key, o.value.clone())?;
    }
    builder.build()?.try_deserialize()
}

/// The file's tree after [`walk_file`], as a `config` source.
#[derive(Debug, Clone)]
struct CheckedFile(Map<String, Value>);

impl config::Source for CheckedFile {
    fn clone_into_box(&self) -> Box<dyn config::Source + Send + Sync> {
        Box::new(self.clone())
    }

    fn collect(&self) -> Result<Map<String, Value>, config::ConfigError> {
        Ok(self.0.clone())
    }
}

/// The file's content that matches the schema, ready for the `config` crate.
#[derive(Debug, Default)]
pub(crate) struct FileTree {
    /// Top-level sections, with bad keys removed and `[[array]]` defaults filled in.
    pub(crate) root: Map<String, Value>,
    /// 1-based line of each key path seen in the file (`camera[3].url`, `camera[3]`).
    pub(crate) lines: HashMap<String, usize>,
}

/// Checks `doc` against [`SECTIONS`]. Every unknown or mistyped key becomes a problem
/// and is left out of the returned tree, so that deserializing the tree cannot fail on
/// them and validation can go on to find the remaining problems.
pub(crate) fn walk_file(doc: &DeTable<'_>, text: &str, problems: &mut Problems) -> FileTree {
    let mut walker = Walker {
        lines: LineIndex::new(text),
        tree: FileTree::default(),
        problems,
    };
    for (name, value) in doc.iter() {
        walker.top_level(name, value);
    }
    walker.tree
}

struct Walker<'p> {
    lines: LineIndex,
    tree: FileTree,
    problems: &'p mut Problems,
}

impl Walker<'_> {
    fn note_line(&mut self, path: &str, span: Range<usize>) {
        let line = self.lines.line_of(span.start);
        self.tree.lines.insert(path.to_owned(), line);
    }

    fn problem(&mut self, path: &str, message: String) {
        self.problems.push(path, message);
    }

    fn top_level(
        &mut self,
        name: &Spanned<std::borrow::Cow<'_, str>>,
        value: &Spanned<DeValue<'_>>,
    ) {
        let name_str = name.get_ref().as_ref();
        self.note_line(name_str, name.span());
        let Some(section) = section(name_str) else {
            let mut message = "unknown section".to_owned();
            let names = SECTIONS.iter().map(|section| section.name);
            if matches!(name_str, "serial" | "valid_from" | "valid_until" | "grant") {
                message.push_str("; this looks like a signed policy, not a gateway configuration");
            } else if let Some(near) = closest(name_str, names).as_deref().and_then(section) {
                message.push_str(&format!("; did you mean {}?", near.header()));
            }
            self.problem(name_str, message);
            return;
        };
        match (section.repeated, value.get_ref()) {
            (false, DeValue::Table(table)) => {
                let converted = self.table(section, name_str, table);
                self.tree
                    .root
                    .insert(section.name.to_owned(), Value::new(None, converted));
            }
            (true, DeValue::Array(entries)) => {
                let mut converted = Vec::with_capacity(entries.len());
                for (index, entry) in entries.iter().enumerate() {
                    let path = format!("{name_str}[{index}]");
                    self.note_line(&path, entry.span());
                    match entry.get_ref() {
                        DeValue::Table(table) => {
                            let mut fields = self.table(section, &path, table);
                            for key in section.keys {
                                if let Some(default) = key.default {
                                    fields
                                        .entry(key.name.to_owned())
                                        .or_insert_with(|| default.to_value());
                                }
                            }
                            converted.push(Value::new(None, fields));
                        }
                        other => {
                            let message = format!(
                                "expected a table, found {}; write each entry as {}",
                                type_name(other),
                                section.header()
                            );
                            self.problem(&path, message);
                            // Keep the indices of the following entries equal to the file's.
                            converted.push(Value::new(None, Map::<String, Value>::new()));
                        }
                    }
                }
                self.tree
                    .root
                    .insert(section.name.to_owned(), Value::new(None, converted));
            }
            (_, other) => {
                let message = format!(
                    "expected {}, found {}; write it as {}",
                    if section.repeated {
                        "an array of tables"
                    } else {
                        "a table"
                    },
                    type_name(other),
                    section.header()
                );
                self.problem(name_str, message);
            }
        }
    }

    fn table(&mut self, section: &Section, path: &str, table: &DeTable<'_>) -> Map<String, Value> {
        let mut fields = Map::new();
        for (name, value) in table.iter() {
            let name_str = name.get_ref().as_ref();
            let key_path = format!("{path}.{name_str}");
            self.note_line(&key_path, name.span());
            let Some(key) = section.key(name_str) else {
                let mut message = "unknown key".to_owned();
                let names = section.keys.iter().map(|key| key.name);
                if let Some(near) = closest(name_str, names) {
                    message.push_str(&format!("; did you mean {near}?"));
                }
                self.problem(&key_path, message);
                continue;
            };
            if let Some(converted) = self.value(key.kind, &key_path, value) {
                fields.insert(key.name.to_owned(), converted);
            }
        }
        fields
    }

    fn value(&mut self, kind: Kind, path: &str, value: &Spanned<DeValue<'_>>) -> Option<Value> {
        match (kind, value.get_ref()) {
            (Kind::Text | Kind::Duration | Kind::Path, DeValue::String(s)) => {
                Some(Value::new(None, s.as_ref()))
            }
            (Kind::Bool, DeValue::Boolean(b)) => Some(Value::new(None, *b)),
            (Kind::Integer, DeValue::Integer(n)) => {
                match i64::from_str_radix(n.as_str(), n.radix()) {
                    Ok(n) => Some(Value::new(None, n)),
                    Err(_) => {
                        self.problem(path, format!("integer {n} is out of range"));
                        None
                    }
                }
            }
            (Kind::List, DeValue::Array(items)) => {
                let mut converted = Vec::with_capacity(items.len());
                let mut all_strings = true;
                for (index, item) in items.iter().enumerate() {
                    let item_path = format!("{path}[{index}]");
                    self.note_line(&item_path, item.span());
                    match item.get_ref() {
                        DeValue::String(s) => converted.push(Value::new(None, s.as_ref())),
                        other => {
                            let message = format!("expected a string, found {}", type_name(other));
                            self.problem(&item_path, message);
                            all_strings = false;
                        }
                    }
                }
                all_strings.then(|| Value::new(None, converted))
            }
            (kind, other) => {
                let message = format!("expected {}, found {}", kind.expected(), type_name(other));
                self.problem(path, message);
                None
            }
        }
    }
}

fn type_name(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// Byte offset to 1-based line number.
pub(crate) struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineIndex { starts }
    }

    /// 1-based line and column of `offset`.
    pub(crate) fn position(&self, offset: usize) -> (usize, usize) {
        // `starts[0]` is 0, so at least one start is <= offset.
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        (line, offset - self.starts[line - 1] + 1)
    }

    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.position(offset).0
    }
}

/// An environment override, checked against the schema.
#[derive(Debug)]
pub(crate) struct EnvOverride {
    /// The variable's name (`PASSERELLE__RTSP__LISTEN`).
    pub(crate) var: String,
    /// The `config` key it sets (`rtsp.listen`).
    pub(crate) key: String,
    pub(crate) value: Value,
}

/// Picks the `PASSERELLE__*` variables out of `env`. Each must name a scalar key of a
/// table section, in upper case (`PASSERELLE__QUIC__IDLE_TIMEOUT`); anything else is a
/// problem named after the variable. Other variables are ignored.
pub(crate) fn env_overrides<I, K, V>(env: I, problems: &mut Problems) -> Vec<EnvOverride>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut ours: Vec<(String, V)> = env
        .into_iter()
        .filter(|(name, _)| {
            let name = name.as_ref().as_encoded_bytes();
            name.starts_with(ENV_PREFIX.as_bytes())
        })
        .map(|(name, value)| (name.as_ref().to_string_lossy().into_owned(), value))
        .collect();
    // The process environment comes in no particular order: keep reports stable.
    ours.sort_by(|a, b| a.0.cmp(&b.0));
    let mut overrides = Vec::with_capacity(ours.len());
    for (name, value) in ours {
        match env_override(&name, value.as_ref()) {
            Ok(found) => overrides.push(found),
            Err(message) => problems.push(&name, message),
        }
    }
    overrides
}

fn env_override(name: &str, value: &OsStr) -> Result<EnvOverride, String> {
    // The caller only passes names that start with the prefix.
    let rest = name.strip_prefix(ENV_PREFIX).unwrap_or(name);
    let parts: Vec<&str> = rest.split(ENV_SEPARATOR).collect();
    let [section_part, key_part] = parts[..] else {
        return Err(
            "expected PASSERELLE__SECTION__KEY (two parts after the prefix, \
                    separated by a double underscore)"
                .to_owned(),
        );
    };
    let section = SECTIONS
        .iter()
        .find(|section| section.name.to_ascii_uppercase() == section_part)
        .ok_or_else(|| {
            let mut message = format!("unknown section {section_part}");
            let names = SECTIONS
                .iter()
                .map(|section| section.name.to_ascii_uppercase());
            if let Some(near) = closest(section_part, names) {
                message.push_str(&format!("; did you mean {ENV_PREFIX}{near}__{key_part}?"));
            }
            message
        })?;
    if section.repeated {
        return Err(format!(
            "{} entries cannot be set from the environment; set them in the file",
            section.header()
        ));
    }
    let key = section
        .keys
        .iter()
        .find(|key| key.name.to_ascii_uppercase() == key_part)
        .ok_or_else(|| {
            let mut message = format!("unknown key {key_part} of {}", section.header());
            let names = section.keys.iter().map(|key| key.name.to_ascii_uppercase());
            if let Some(near) = closest(key_part, names) {
                message.push_str(&format!(
                    "; did you mean {ENV_PREFIX}{section_part}__{near}?"
                ));
            }
            message
        })?;
    let value = value
        .to_str()
        .ok_or_else(|| "value is not valid UTF-8".to_owned())?;
    let kind = match key.kind {
        Kind::Text | Kind::Duration | Kind::Path => ValueKind::String(value.to_owned()),
        Kind::Integer => value
            .trim()
            .parse::<i64>()
            .map(ValueKind::I64)
            .map_err(|_| format!("expected an integer, found {value:?}"))?,
        Kind::Bool => match value.trim() {
            "true" => ValueKind::Boolean(true),
            "false" => ValueKind::Boolean(false),
            _ => return Err(format!("expected true or false, found {value:?}")),
        },
        Kind::List => {
            return Err(format!(
                "{}.{} is a list; set it in the file",
                section.name, key.name
            ));
        }
    };
    Ok(EnvOverride {
        var: name.to_owned(),
        key: format!("{}.{}", section.name, key.name),
        value: Value::new(None, kind),
    })
}

/// The candidate nearest to `word` by edit distance, if near enough to be a typo.
fn closest<S: AsRef<str>>(word: &str, candidates: impl Iterator<Item = S>) -> Option<String> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .map(|candidate| (edit_distance(word, candidate.as_ref()), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_ref().to_owned())
}

/// Optimal string alignment distance: Levenshtein plus adjacent transpositions, which is
/// the typo most often made in key names (`idle_tiemout`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("idle_tiemout", "idle_timeout"), 1);
        assert_eq!(edit_distance("listen", "listen"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn closest_suggests_only_near_names() {
        let keys = ["listen", "keep_alive", "idle_timeout"];
        assert_eq!(
            closest("idle_tiemout", keys.iter()).as_deref(),
            Some("idle_timeout")
        );
        assert_eq!(closest("bandwidth", keys.iter()), None);
    }

    #[test]
    fn line_index_finds_lines_and_columns() {
        let index = LineIndex::new("a\nbc\n\nd");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(2), (2, 1));
        assert_eq!(index.position(3), (2, 2));
        assert_eq!(index.position(5), (3, 1));
        assert_eq!(index.position(6), (4, 1));
    }
}
