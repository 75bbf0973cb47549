//! Reading YAML and JSON documents with source positions.
//!
//! A document is read twice: once into the caller's type (serde-saphyr or serde_json,
//! wrapped in `serde_path_to_error` for the field path), and once into a small tree of
//! positioned nodes, so that checks made after deserialization can point at the line
//! and column of the field they are about. All YAML parsing goes through [`yaml`].

use serde::de::DeserializeOwned;

use crate::error::{SpecError, SpecIssue};
use crate::raw::{FromValue, Scalar, ValueVisitor};

/// Largest document accepted, checked before parsing: a spec or config is a few KiB,
/// and a parser should not be handed megabytes from an HTTP body.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// A line and column, 1-based; the column counts characters.
pub(crate) type Pos = (u32, u32);

/// A parsed document's node tree, for mapping a field path to a position.
#[derive(Clone, Debug)]
pub struct Located {
    root: Node,
    /// The document, to find where a scalar's text starts (after a quote or not).
    text: String,
}

#[derive(Clone, Debug)]
struct Node {
    pos: Pos,
    /// Byte offset of the node's first character, when known.
    byte: Option<usize>,
    kind: NodeKind,
}

#[derive(Clone, Debug)]
enum NodeKind {
    Null,
    /// A string scalar.
    Scalar(String),
    /// A number or boolean, as text.
    Value(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Pos, Node)>),
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A mapping key.
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Formats a path as `stages[1].successCriteria[0]`.
pub(crate) fn path_string(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Seg::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Parses `stages[1].successCriteria[0]` back into segments.
pub(crate) fn parse_path(path: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !name.is_empty() {
            segs.push(Seg::Key(name.to_owned()));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((index, after)) = inner.split_once(']') else {
                break;
            };
            match index.parse() {
                Ok(i) => segs.push(Seg::Index(i)),
                Err(_) => segs.push(Seg::Key(index.to_owned())),
            }
            rest = after;
        }
    }
    segs
}

/// Which parser a document goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Syntax {
    Yaml,
    Json,
}

fn syntax_of(text: &str) -> Syntax {
    match text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .chars()
        .next()
    {
        Some('{') => Syntax::Json,
        _ => Syntax::Yaml,
    }
}

pub(crate) fn too_large(len: u64) -> SpecIssue {
    SpecIssue::new(
        "",
        format!(
            "expected a document of at most {MAX_INPUT_BYTES} bytes (1 MiB), found {len} bytes"
        ),
    )
}

/// Checks the size limit, then decodes UTF-8, pointing at the first invalid byte.
pub(crate) fn decode<'a>(bytes: &'a [u8], origin: &str) -> Result<&'a str, SpecError> {
    if bytes.len() > MAX_INPUT_BYTES {
        return Err(SpecError::single(origin, too_large(bytes.len() as u64)));
    }
    std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        let line = valid.iter().filter(|b| **b == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        // Valid up to here, so this slice decodes.
        let column = std::str::from_utf8(&valid[line_start..]).map_or(1, |s| s.chars().count() + 1);
        SpecError::single(
            origin,
            SpecIssue::new(
                "",
                format!(
                    "expected UTF-8 text, found the byte 0x{:02x}",
                    bytes[e.valid_up_to()]
                ),
            )
            .at(Some((line as u32, column as u32))),
        )
    })
}

/// Parses a YAML or JSON document (JSON when its first non-blank character is `{`)
/// into `T`, with errors that name the position and field. `origin` names the text in
/// messages (a file name, or `request body`).
pub fn from_yaml_str<T: DeserializeOwned>(text: &str, origin: &str) -> Result<T, SpecError> {
    read_document(text, origin).map(|(value, _)| value)
}

/// Like [`from_yaml_str`], also returning the document's node positions, so that a
/// caller's own checks after deserialization (e.g. of a server config) can report
/// `file:line:col: field: …` too: see [`Located::issue`].
pub fn from_yaml_str_located<T: DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<(T, Located), SpecError> {
    read_document(text, origin).map(|(value, tree)| {
        let tree = tree.unwrap_or_else(|| Located {
            root: Node {
                pos: (0, 0),
                byte: None,
                kind: NodeKind::Null,
            },
            text: String::new(),
        });
        (value, tree)
    })
}

/// Like [`from_yaml_str`], also returning the node tree for locating later errors.
pub(crate) fn read_document<T: DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<(T, Option<Located>), SpecError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(SpecError::single(origin, too_large(text.len() as u64)));
    }
    let syntax = syntax_of(text);
    let tree = match (syntax, located_tree(text)) {
        (_, Ok(tree)) => Some(tree),
        (Syntax::Yaml, Err(issue)) => return Err(SpecError::single(origin, issue)),
        // A JSON document the YAML reader cannot follow still gets serde_json's own
        // errors; only positions of later checks are lost.
        (Syntax::Json, Err(_)) => None,
    };
    if let Some(tree) = &tree {
        match tree.root.kind {
            NodeKind::Map(_) => {}
            NodeKind::Null => {
                return Err(SpecError::single(
                    origin,
                    SpecIssue::new(
                        "",
                        "expected a YAML or JSON mapping, found an empty document",
                    ),
                ));
            }
            ref other => {
                return Err(SpecError::single(
                    origin,
                    SpecIssue::new(
                        "",
                        format!(
                            "expected a YAML or JSON mapping of fields, found {}",
                            describe(other)
                        ),
                    )
                    .at(Some(tree.root.pos)),
                ));
            }
        }
    }
    let value = match syntax {
        Syntax::Yaml => yaml::<T>(text, true),
        Syntax::Json => json::<T>(text),
    };
    match value {
        Ok(value) => Ok((value, tree)),
        Err(mut issue) => {
            match &tree {
                Some(tree) => issue.refine(tree),
                None => issue.message = reword(&issue.message, None),
            }
            Err(SpecError::single(origin, issue.into_issue()))
        }
    }
}

fn describe(kind: &NodeKind) -> String {
    match kind {
        NodeKind::Null => "nothing".to_owned(),
        NodeKind::Scalar(s) => {
            let short: String = s.chars().take(40).collect();
            format!("the text `{short}`")
        }
        NodeKind::Value(v) => v.clone(),
        NodeKind::Seq(_) => "a list".to_owned(),
        NodeKind::Map(_) => "a mapping".to_owned(),
    }
}

/// A deserialization failure before it is turned into a [`SpecIssue`].
struct Failure {
    pos: Option<Pos>,
    path: Vec<Seg>,
    message: String,
    /// The parser's position is the end of the bad value (serde_json data errors);
    /// the node tree's start of the value is better.
    prefer_tree_pos: bool,
}

impl Failure {
    /// Sharpens the failure with the node tree: an unknown field points at its key, a
    /// missing field names itself, a criterion that does not parse points at the
    /// offending character, and serde's wording becomes "expected …, found …".
    fn refine(&mut self, tree: &Located) {
        if let Some(name) = between_backticks(&self.message, "unknown field `") {
            if self.path.last() != Some(&Seg::Key(name.clone())) {
                self.path.push(Seg::Key(name.clone()));
            }
            if let Some(pos) = tree.key_pos(&self.path) {
                self.pos = Some(pos);
            }
            let expected = self
                .message
                .split_once(", expected ")
                .map(|(_, e)| e.replace('`', ""));
            let hint = expected
                .as_deref()
                .and_then(|e| did_you_mean(&name, e.trim_start_matches("one of ").split(", ")))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            self.message = match expected {
                Some(e) => format!("expected {e}, found the unknown field `{name}`{hint}"),
                None => format!("expected no fields here, found the unknown field `{name}`"),
            };
            return;
        }
        if let Some(name) = between_backticks(&self.message, "missing field `") {
            self.pos = tree.pos(&self.path);
            self.path.push(Seg::Key(name));
            self.message = "expected this required field, found none".to_owned();
            return;
        }
        let is_criterion = matches!(
            self.path.as_slice(),
            [.., Seg::Key(k), Seg::Index(_)] if k == "successCriteria"
        );
        if is_criterion && let Some(node) = tree.node(&self.path) {
            match &node.kind {
                NodeKind::Map(entries) => {
                    // `- error_rate: < 1%` is the usual slip: the colon makes a mapping.
                    let key = entries.first().map_or("", |e| e.0.as_str());
                    self.pos = Some(node.pos);
                    self.message = format!(
                        "expected a criterion string like `error_rate < 1%`, found a mapping (remove the `:` after `{key}`)"
                    );
                    return;
                }
                NodeKind::Seq(_) | NodeKind::Null => {
                    self.pos = Some(node.pos);
                    self.message = format!(
                        "expected a criterion string like `error_rate < 1%`, found {}",
                        describe(&node.kind)
                    );
                    return;
                }
                _ => {}
            }
        }
        if is_criterion && let Some(text) = tree.scalar(&self.path) {
            if let Err(e) = crate::criteria::Criterion::parse(text) {
                self.pos = tree.pos_in_scalar(&self.path, e.offset);
                self.message = e.message;
            }
            return;
        }
        let node = tree.node(&self.path);
        if let Some(node) = node
            && (self.prefer_tree_pos || self.pos.is_none())
        {
            self.pos = Some(node.pos);
        }
        if self.pos.is_none() {
            self.pos = tree.pos(&self.path);
        }
        self.message = reword(&self.message, node.map(|n| &n.kind));
    }

    fn into_issue(self) -> SpecIssue {
        SpecIssue::new(path_string(&self.path), self.message).at(self.pos)
    }
}

fn between_backticks(message: &str, prefix: &str) -> Option<String> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('`').next())
        .map(str::to_owned)
}

/// The closest known name, if it is close enough to be a typo.
pub(crate) fn did_you_mean<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<String> {
    known
        .map(|k| (edit_distance(name, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Rewrites serde's and the parsers' wording into "expected …, found …".
fn reword(message: &str, node: Option<&NodeKind>) -> String {
    let plain = |t: &str| {
        t.replace("u64", "a whole number of at least 0")
            .replace("u32", "a whole number of at least 0")
            .replace("f64", "a number")
            .replace("a boolean", "true or false")
    };
    if let Some(rest) = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return format!("expected {}, found {found}", plain(expected));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((found, expected)) = rest.split_once("`, expected ")
    {
        return format!("expected {}, found `{found}`", expected.replace('`', ""));
    }
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(", set ").next().unwrap_or(rest);
        return format!("expected each key once in a mapping, found `{key}` again");
    }
    if let Some(field) = between_backticks(message, "duplicate field `") {
        return format!("expected each field once, found `{field}` again");
    }
    if message.starts_with("cannot deserialize null into string") {
        return "expected text, found nothing (null)".to_owned();
    }
    if message.contains("after enum variant value") {
        return "expected one key naming the kind (e.g. `exec:` or `http:`), found more than one"
            .to_owned();
    }
    if let Some(expected) = message.strip_prefix("invalid ")
        && !expected.contains(", ")
        && let Some(node) = node
    {
        return format!("expected {}, found {}", plain(expected), describe(node));
    }
    if message.starts_with("alias replay limit exceeded") || message.starts_with("budget breached")
    {
        return "expected a document whose aliases (`*name`) expand to a reasonable size, found one that expands too far".to_owned();
    }
    if message.starts_with("multiple YAML documents detected") {
        return "expected a single YAML document, found another one after `---`".to_owned();
    }
    if message == "trailing comma" {
        return "expected a value after the comma, found a trailing comma".to_owned();
    }
    if let Some(expected) = message.strip_prefix("expected ")
        && !message.contains(" found ")
        && let Some(node) = node
    {
        let expected = expected
            .replace("sequence start", "a list")
            .replace("mapping start", "a mapping");
        return format!("expected {expected}, found {}", describe(node));
    }
    plain(message)
}

fn convert_path(path: &serde_path_to_error::Path) -> Vec<Seg> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|seg| match seg {
            Segment::Seq { index } => Some(Seg::Index(*index)),
            Segment::Map { key } => Some(Seg::Key(key.clone())),
            Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
            Segment::Unknown => None,
        })
        .collect()
}

/// The only place YAML is parsed. `with_path` tracks the field path of a failure
/// (used for the caller's type; the node tree needs none).
fn yaml<T: DeserializeOwned>(text: &str, with_path: bool) -> Result<T, Failure> {
    let mut path = Vec::new();
    // Aliases can expand a small document into a huge one ("billion laughs"); a spec
    // needs few, so replays are capped far below the parser's defaults.
    let mut alias_limits = serde_saphyr::options::AliasLimits::default();
    alias_limits.max_total_replayed_events = 20_000;
    alias_limits.max_replay_stack_depth = 16;
    let options = serde_saphyr::options! { with_snippet: false, alias_limits: alias_limits };
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        if with_path {
            serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
                path = convert_path(e.path());
                e.into_inner()
            })
        } else {
            T::deserialize(de)
        }
    });
    result.map_err(|e| Failure {
        pos: e
            .location()
            .and_then(|l| (l.line() > 0).then(|| (l.line() as u32, l.column() as u32))),
        path,
        message: saphyr_message(&e),
        prefer_tree_pos: false,
    })
}

/// The message of a serde-saphyr error without its position (which is reported in
/// the `file:line:col` prefix instead).
fn saphyr_message(e: &serde_saphyr::Error) -> String {
    let rendered = e.without_snippet().to_string();
    strip_position_suffix(&rendered).to_owned()
}

/// Drops a trailing " at line N column M" that parsers append (only when it is the
/// very end of the message, so that other text with "at line" survives).
fn strip_position_suffix(message: &str) -> &str {
    let Some(i) = message.rfind(" at line ") else {
        return message;
    };
    let tail = &message[i + " at line ".len()..];
    // serde_json writes "at line 3 column 7", serde-saphyr "at line 3, column 7".
    let is_position = tail
        .split_once(" column ")
        .map(|(line, col)| (line.trim_end_matches(','), col))
        .is_some_and(|(line, col)| {
            !line.is_empty()
                && !col.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
                && col.bytes().all(|b| b.is_ascii_digit())
        });
    if is_position { &message[..i] } else { message }
}

fn json<T: DeserializeOwned>(text: &str) -> Result<T, Failure> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de)
        .map_err(|e| (convert_path(e.path()), e.into_inner()))
        .and_then(|v| de.end().map(|()| v).map_err(|e| (Vec::new(), e)));
    value.map_err(|(path, inner)| {
        let pos = (inner.line() > 0).then(|| (inner.line() as u32, inner.column() as u32));
        let message = strip_position_suffix(&inner.to_string()).to_owned();
        Failure {
            pos,
            path,
            message,
            prefer_tree_pos: inner.classify() == serde_json::error::Category::Data,
        }
    })
}

/// Reads the node tree of a document.
fn located_tree(text: &str) -> Result<Located, SpecIssue> {
    match yaml::<serde_saphyr::Spanned<TreeDe>>(text, false) {
        Ok(spanned) => Ok(Located {
            root: node_from(spanned),
            text: text.to_owned(),
        }),
        Err(f) => {
            let message = reword(&f.message, None);
            let message = if message.starts_with("expected ") {
                message
            } else {
                format!("expected a YAML or JSON document, found a syntax error: {message}")
            };
            Err(SpecIssue::new("", message).at(f.pos))
        }
    }
}

// === the node tree ===

/// Deserialization target for the node tree: children carry their own spans.
enum TreeDe {
    Null,
    Scalar(String),
    Value(String),
    Seq(Vec<serde_saphyr::Spanned<TreeDe>>),
    Map(Vec<(serde_saphyr::Spanned<KeyDe>, serde_saphyr::Spanned<TreeDe>)>),
}

/// A mapping key of any scalar type, as text.
struct KeyDe(String);

fn node_from(spanned: serde_saphyr::Spanned<TreeDe>) -> Node {
    let loc = spanned.referenced;
    let pos = (loc.line() as u32, loc.column() as u32);
    let byte = loc.span().byte_offset().map(|b| b as usize);
    let kind = match spanned.value {
        TreeDe::Null => NodeKind::Null,
        TreeDe::Scalar(s) => NodeKind::Scalar(s),
        TreeDe::Value(v) => NodeKind::Value(v),
        TreeDe::Seq(items) => NodeKind::Seq(items.into_iter().map(node_from).collect()),
        TreeDe::Map(entries) => NodeKind::Map(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let kpos = (k.referenced.line() as u32, k.referenced.column() as u32);
                    (k.value.0, kpos, node_from(v))
                })
                .collect(),
        ),
    };
    Node { pos, byte, kind }
}

impl<'de> FromValue<'de> for TreeDe {
    const EXPECTING: &'static str = "any YAML value";

    fn scalar(value: Scalar) -> Self {
        match value {
            Scalar::Text(s) => TreeDe::Scalar(s),
            Scalar::Number(v) | Scalar::Binary(v) => TreeDe::Value(v),
            Scalar::Bool(b) => TreeDe::Value(b.to_string()),
            Scalar::Null => TreeDe::Null,
        }
    }

    fn seq<A: serde::de::SeqAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = a.next_element()? {
            items.push(item);
        }
        Ok(TreeDe::Seq(items))
    }

    fn map<A: serde::de::MapAccess<'de>>(mut a: A) -> Result<Self, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = a.next_key()? {
            entries.push((key, a.next_value()?));
        }
        Ok(TreeDe::Map(entries))
    }
}

impl<'de> serde::Deserialize<'de> for TreeDe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor::new())
    }
}

impl FromValue<'_> for KeyDe {
    const EXPECTING: &'static str = "a mapping key";

    fn scalar(value: Scalar) -> Self {
        KeyDe(match value {
            Scalar::Text(s) | Scalar::Number(s) | Scalar::Binary(s) => s,
            Scalar::Bool(b) => b.to_string(),
            Scalar::Null => "null".to_owned(),
        })
    }
}

impl<'de> serde::Deserialize<'de> for KeyDe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // As a string, so that `y:` stays `y` rather than becoming YAML 1.1's `true`.
        d.deserialize_string(ValueVisitor::new())
    }
}

// === impl Located ===

impl Located {
    fn node(&self, path: &[Seg]) -> Option<&Node> {
        let mut node = &self.root;
        for seg in path {
            node = match (&node.kind, seg) {
                (NodeKind::Map(entries), Seg::Key(k)) => {
                    &entries.iter().find(|(key, _, _)| key == k)?.2
                }
                (NodeKind::Seq(items), Seg::Index(i)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// Position of the value at `path`, or of the closest parent that exists (so a
    /// missing field points at the mapping that lacks it).
    pub(crate) fn pos(&self, path: &[Seg]) -> Option<Pos> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.node(&path[..n]))
            .map(|node| node.pos)
            .filter(|(line, _)| *line > 0)
    }

    /// A problem at the field written as `apps[0].listen` (the format of
    /// [`SpecIssue::path`]), positioned at its value when the document has it.
    pub fn issue(&self, path: &str, message: impl Into<String>) -> SpecIssue {
        let segs = parse_path(path);
        SpecIssue::new(path, message).at(self.pos(&segs))
    }

    /// The part of the document at `path`, keeping its positions in the whole
    /// document (to check a member of a group as a document of its own).
    pub(crate) fn subtree(&self, path: &[Seg]) -> Option<Located> {
        Some(Located {
            root: self.node(path)?.clone(),
            text: self.text.clone(),
        })
    }

    /// Position of the key of the field at `path` (its last segment must be a key).
    pub(crate) fn key_pos(&self, path: &[Seg]) -> Option<Pos> {
        let (Seg::Key(k), parent) = path.split_last()? else {
            return None;
        };
        match &self.node(parent)?.kind {
            NodeKind::Map(entries) => entries.iter().find(|(key, _, _)| key == k).map(|e| e.1),
            _ => None,
        }
    }

    /// The value at `path` as written, for messages about values that serde let
    /// through as placeholders.
    pub(crate) fn raw(&self, path: &[Seg]) -> Option<crate::raw::Raw> {
        use crate::raw::Raw;
        Some(match &self.node(path)?.kind {
            NodeKind::Null => Raw::Null,
            NodeKind::Scalar(s) => Raw::Text(s.clone()),
            NodeKind::Value(v) if v.parse::<f64>().is_ok() => Raw::Number(v.clone()),
            NodeKind::Value(v) => Raw::Other(v.clone()),
            NodeKind::Seq(_) => Raw::Other("a list".to_owned()),
            NodeKind::Map(_) => Raw::Other("a mapping".to_owned()),
        })
    }

    /// The text of the string scalar at `path`.
    pub(crate) fn scalar(&self, path: &[Seg]) -> Option<&str> {
        match &self.node(path)?.kind {
            NodeKind::Scalar(s) => Some(s),
            _ => None,
        }
    }

    /// Position of the `offset`-th character of the string scalar at `path`. Exact for
    /// plain and quoted one-line scalars; escapes and folded lines can shift it, and
    /// then it points at the scalar's start.
    pub(crate) fn pos_in_scalar(&self, path: &[Seg], offset: usize) -> Option<Pos> {
        let node = self.node(path)?;
        let (line, col) = node.pos;
        let Some(byte) = node.byte else {
            return Some((line, col));
        };
        let source = &self.text[byte.min(self.text.len())..];
        let quoted = source.starts_with(['"', '\'']);
        let body = if quoted { &source[1..] } else { source };
        let value = self.scalar(path)?;
        let same_line = body.lines().next().unwrap_or("");
        let prefix: String = value.chars().take(offset).collect();
        if same_line.starts_with(&prefix) {
            Some((line, col + u32::from(quoted) + offset as u32))
        } else {
            Some((line, col))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_positions() {
        let text = "a: 1\nlist:\n  - x: \"hello\"\n    y: [1, 2]\n";
        let tree = located_tree(text).unwrap();
        assert_eq!(tree.pos(&[Seg::Key("a".into())]), Some((1, 4)));
        assert_eq!(tree.key_pos(&[Seg::Key("list".into())]), Some((2, 1)));
        let x = [Seg::Key("list".into()), Seg::Index(0), Seg::Key("x".into())];
        assert_eq!(tree.pos(&x), Some((3, 8)));
        assert_eq!(tree.scalar(&x), Some("hello"));
        assert_eq!(tree.pos_in_scalar(&x, 2), Some((3, 11)));
        let y1 = [
            Seg::Key("list".into()),
            Seg::Index(0),
            Seg::Key("y".into()),
            Seg::Index(1),
        ];
        assert_eq!(tree.pos(&y1), Some((4, 12)));
    }

    #[test]
    fn located_issues_for_callers() {
        #[derive(serde::Deserialize)]
        struct Config {
            apps: Vec<App>,
        }
        #[derive(serde::Deserialize)]
        struct App {
            listen: String,
        }
        let text = "apps:\n  - listen: 127.0.0.1:8000\n  - listen: nowhere\n";
        let (config, located) = from_yaml_str_located::<Config>(text, "fledge.yaml").unwrap();
        assert_eq!(config.apps[1].listen, "nowhere");
        let issue = located.issue("apps[1].listen", "expected host:port, found `nowhere`");
        assert_eq!((issue.line, issue.column), (Some(3), Some(13)));
        assert_eq!(
            parse_path("stages[1].successCriteria[0]"),
            [
                Seg::Key("stages".into()),
                Seg::Index(1),
                Seg::Key("successCriteria".into()),
                Seg::Index(0)
            ]
        );
        assert_eq!(path_string(&parse_path("a.b[2][3].c")), "a.b[2][3].c");
    }

    #[test]
    fn only_a_trailing_position_is_stripped() {
        assert_eq!(
            strip_position_suffix("trailing comma at line 5 column 21"),
            "trailing comma"
        );
        assert_eq!(
            strip_position_suffix("bad key at line 1, column 1"),
            "bad key"
        );
        assert_eq!(
            strip_position_suffix("at line 3, column 4 (defined at line 1, column 2) (used"),
            "at line 3, column 4 (defined at line 1, column 2) (used"
        );
        assert_eq!(strip_position_suffix("no position"), "no position");
    }

    #[test]
    fn json_is_read_as_json() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            a: u8,
        }
        let err = from_yaml_str::<T>("{\n  \"a\": 300\n}", "x.json").unwrap_err();
        assert_eq!(err.issues[0].path, "a");
        assert_eq!(err.issues[0].line, Some(2));
    }
}
