//! A small JSON path: `$.data.result[0].value`, `items[2]['display name']`.
//!
//! Enough to point at one value in a JSON document, like Argo Rollouts' web metric:
//! an optional leading `$`, `.name` (or a bare `name` at the start) for object keys,
//! `[n]` for array indices (`[-1]` is the last element), and `['name']` or `["name"]`
//! for keys with dots, spaces or brackets. No wildcards, filters or recursion: a path
//! names exactly one value. Paths are parsed once, when the settings are loaded, so a
//! malformed path is a configuration error, not a failure at every tick.

use std::fmt;

use serde_json::Value;

/// A parsed JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(i64),
}

impl JsonPath {
    /// Parses `text`; the error says where the path is malformed.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let err = |at: usize, what: &str| format!("JSON path `{text}` at offset {at}: {what}");
        let chars: Vec<char> = text.trim().chars().collect();
        let mut i = 0;
        if chars.first() == Some(&'$') {
            i = 1;
        }
        let mut steps = Vec::new();
        // A bare key may only start a path that has no `$`.
        let mut first = i == 0;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    i += 1;
                    let start = i;
                    while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
                        i += 1;
                    }
                    if i == start {
                        return Err(err(start, "expected a key after `.`"));
                    }
                    steps.push(Step::Key(chars[start..i].iter().collect()));
                }
                '[' => {
                    i += 1;
                    match chars.get(i) {
                        Some(&q @ ('\'' | '"')) => {
                            i += 1;
                            let start = i;
                            while i < chars.len() && chars[i] != q {
                                i += 1;
                            }
                            if i >= chars.len() {
                                return Err(err(start, "unclosed quoted key"));
                            }
                            steps.push(Step::Key(chars[start..i].iter().collect()));
                            i += 1;
                        }
                        _ => {
                            let start = i;
                            while i < chars.len() && chars[i] != ']' {
                                i += 1;
                            }
                            let inner: String = chars[start..i].iter().collect();
                            let index = inner.trim().parse::<i64>().map_err(|_| {
                                err(
                                    start,
                                    &format!("expected an index or a quoted key, found `{inner}`"),
                                )
                            })?;
                            steps.push(Step::Index(index));
                        }
                    }
                    if chars.get(i) != Some(&']') {
                        return Err(err(i, "expected `]`"));
                    }
                    i += 1;
                }
                _ if first => {
                    let start = i;
                    while i < chars.len() && !matches!(chars[i], '.' | '[' | ']') {
                        i += 1;
                    }
                    steps.push(Step::Key(chars[start..i].iter().collect()));
                }
                c => return Err(err(i, &format!("unexpected `{c}`"))),
            }
            first = false;
        }
        Ok(JsonPath {
            text: text.to_owned(),
            steps,
        })
    }

    /// The value the path names in `doc`, or `None` when some step is missing.
    pub fn select<'a>(&self, doc: &'a Value) -> Option<&'a Value> {
        let mut cur = doc;
        for step in &self.steps {
            cur = match (step, cur) {
                (Step::Key(k), Value::Object(map)) => map.get(k)?,
                (Step::Index(i), Value::Array(items)) => {
                    let idx = if *i < 0 {
                        items.len().checked_sub(i.unsigned_abs() as usize)?
                    } else {
                        *i as usize
                    };
                    items.get(idx)?
                }
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The number the path names: a JSON number, or a string holding one (Prometheus
    /// and many APIs send numbers as strings). `Err` says what was found instead.
    pub fn number(&self, doc: &Value) -> Result<Option<f64>, String> {
        match self.select(doc) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("`{self}` is not a finite number")),
            Some(Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .map(Some)
                .map_err(|_| format!("`{self}` is the string {s:?}, not a number")),
            Some(Value::Bool(b)) => Ok(Some(if *b { 1.0 } else { 0.0 })),
            Some(other) => Err(format!(
                "`{self}` is {}, not a number",
                match other {
                    Value::Array(_) => "an array",
                    _ => "an object",
                }
            )),
        }
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "data": {"result": [{"value": [1700000000, "12.5"]}, {"value": [1, "3"]}]},
            "stats": {"error rate": 0.02, "ok": true, "n": 10},
            "items": [1, 2, 3]
        })
    }

    #[test]
    fn selects_keys_indices_and_quoted_keys() {
        let d = doc();
        let n = |p: &str| JsonPath::parse(p).unwrap().number(&d).unwrap();
        assert_eq!(n("$.data.result[0].value[1]"), Some(12.5));
        assert_eq!(n("data.result[-1].value[1]"), Some(3.0));
        assert_eq!(n("$.stats['error rate']"), Some(0.02));
        assert_eq!(n(r#"$["stats"]["n"]"#), Some(10.0));
        assert_eq!(n("$.stats.ok"), Some(1.0));
        assert_eq!(n("items[2]"), Some(3.0));
        assert_eq!(n("items[3]"), None);
        assert_eq!(n("$.missing.deeper"), None);
    }

    #[test]
    fn wrong_kinds_and_bad_paths_are_errors() {
        let d = doc();
        assert!(JsonPath::parse("$.items").unwrap().number(&d).is_err());
        assert!(JsonPath::parse("$.data").unwrap().number(&d).is_err());
        for bad in ["$.", "$.a[", "$.a[x]", "$['a", "$.a]", "$a"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
