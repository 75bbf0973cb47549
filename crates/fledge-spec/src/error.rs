//! Spec errors: every problem names the file, line, column and field, what was
//! expected and what was found.

use std::fmt;

use serde::Serialize;

/// A spec (or config file) that could not be read, with every problem found.
///
/// Displays one line per problem: `bad.yaml:7:9: stages[1].traffic: expected a number
/// from 0 to 100, found 150`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub struct SpecError {
    /// Where the text came from (a file name, or e.g. `request body`).
    pub origin: String,
    /// The problems, in document order. Never empty.
    pub issues: Vec<SpecIssue>,
}

/// One problem in a spec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpecIssue {
    /// 1-based line, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column in characters, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The field, e.g. `stages[1].traffic`; empty for the document as a whole.
    pub path: String,
    /// What was expected and what was found.
    pub message: String,
}

// === impl SpecError ===

impl SpecError {
    /// `Ok` when there is no issue, else the error of `origin` with all of them.
    pub fn unless_empty(origin: &str, issues: Vec<SpecIssue>) -> Result<(), Self> {
        if issues.is_empty() {
            Ok(())
        } else {
            Err(SpecError {
                origin: origin.to_owned(),
                issues,
            })
        }
    }

    /// An error with a single problem.
    pub fn single(origin: &str, issue: SpecIssue) -> Self {
        SpecError {
            origin: origin.to_owned(),
            issues: vec![issue],
        }
    }
}

impl SpecError {
    /// The error for a document of `len` bytes, over [`crate::MAX_INPUT_BYTES`]; for
    /// callers that stop reading at the limit and know the real size.
    pub fn too_large(origin: &str, len: u64) -> Self {
        SpecError::single(origin, crate::parse::too_large(len))
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, issue) in self.issues.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(&self.origin)?;
            if let Some(line) = issue.line {
                write!(f, ":{line}")?;
                if let Some(col) = issue.column {
                    write!(f, ":{col}")?;
                }
            }
            f.write_str(": ")?;
            if !issue.path.is_empty() {
                write!(f, "{}: ", issue.path)?;
            }
            f.write_str(&issue.message)?;
        }
        Ok(())
    }
}

// === impl SpecIssue ===

impl SpecIssue {
    /// A problem with no known position.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        SpecIssue {
            line: None,
            column: None,
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same problem at a position.
    pub fn at(mut self, pos: Option<(u32, u32)>) -> Self {
        if let Some((line, column)) = pos {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}
