//! `GitRef`: a full ref name as a push names it (`refs/heads/main`, `refs/tags/v1.0.0`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A full Git ref name: `refs/…`, no whitespace or control characters. Built only by
/// `parse`; stored and serialised as its text.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GitRef(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a full ref name (refs/…)")]
pub struct GitRefError(pub String);

impl GitRef {
    pub fn parse(s: &str) -> Result<GitRef, GitRefError> {
        let ok = s.len() > "refs/".len()
            && s.starts_with("refs/")
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(GitRef(s.to_string()))
        } else {
            Err(GitRefError(s.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for GitRef {
    type Error = GitRefError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        GitRef::parse(&s)
    }
}

impl From<GitRef> for String {
    fn from(r: GitRef) -> String {
        r.0
    }
}

impl fmt::Display for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for GitRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GitRef({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_ref_names() {
        assert_eq!(
            GitRef::parse("refs/heads/main").unwrap().as_str(),
            "refs/heads/main"
        );
        assert!(GitRef::parse("main").is_err());
        assert!(GitRef::parse("refs/").is_err());
        assert!(GitRef::parse("refs/heads/a b").is_err());
        let back: GitRef = serde_json::from_str("\"refs/tags/v1\"").unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), "\"refs/tags/v1\"");
        assert!(serde_json::from_str::<GitRef>("\"x\"").is_err());
    }
}
