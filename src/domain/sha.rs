//! `CommitSha`: a full Git object id, SHA-1 (40 hex) or SHA-256 (64 hex), lowercase.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A full Git object id in lowercase hex. Abbreviated ids are not accepted: every host sends
/// full ids in pushes, and a prefix cannot be a storage key.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitSha(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShaError {
    #[error("a commit id has 40 (SHA-1) or 64 (SHA-256) hex digits, got {0} characters")]
    Length(usize),
    #[error("a commit id contains only hex digits")]
    NotHex,
}

impl CommitSha {
    /// Parses a full object id; upper-case hex is accepted and lowered.
    pub fn parse(s: &str) -> Result<Self, ShaError> {
        if s.len() != 40 && s.len() != 64 {
            return Err(ShaError::Length(s.chars().count()));
        }
        if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ShaError::NotHex);
        }
        Ok(CommitSha(s.to_ascii_lowercase()))
    }

    /// Parses an object id as a push reports it, where all zeros (40 or 64 of them) means
    /// "no object": the ref was created (`before`) or deleted (`after`).
    pub fn parse_optional(s: &str) -> Result<Option<Self>, ShaError> {
        let sha = Self::parse(s)?;
        Ok(if sha.0.bytes().all(|b| b == b'0') {
            None
        } else {
            Some(sha)
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CommitSha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CommitSha({})", self.0)
    }
}

impl Serialize for CommitSha {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for CommitSha {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CommitSha::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The commit a pull request's merge produced, as the host names it: a full id, or — Bitbucket
/// Cloud's `pullrequest:fulfilled` always — an abbreviation (7 to 39 hex digits), which the
/// ledger resolves against the commits pushed to the repository. Stored as its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MergeCommit {
    Full(CommitSha),
    Abbreviated(String),
}

impl MergeCommit {
    /// A full id, or an abbreviation of at least 7 hex digits (lowered).
    pub fn parse(s: &str) -> Result<Self, ShaError> {
        match CommitSha::parse(s) {
            Ok(sha) => Ok(MergeCommit::Full(sha)),
            Err(e) if s.len() >= 40 => Err(e),
            Err(_) if s.len() < 7 => Err(ShaError::Length(s.chars().count())),
            Err(_) if !s.bytes().all(|b| b.is_ascii_hexdigit()) => Err(ShaError::NotHex),
            Err(_) => Ok(MergeCommit::Abbreviated(s.to_ascii_lowercase())),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            MergeCommit::Full(sha) => sha.as_str(),
            MergeCommit::Abbreviated(s) => s,
        }
    }

    pub fn full(&self) -> Option<&CommitSha> {
        match self {
            MergeCommit::Full(sha) => Some(sha),
            MergeCommit::Abbreviated(_) => None,
        }
    }
}

impl From<CommitSha> for MergeCommit {
    fn from(sha: CommitSha) -> Self {
        MergeCommit::Full(sha)
    }
}

impl fmt::Display for MergeCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MergeCommit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MergeCommit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        MergeCommit::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_commit_is_full_or_an_abbreviation_of_at_least_seven() {
        let full = "709d658dc5b6d6afcd46049c2f332ee3f515a67d";
        assert_eq!(
            MergeCommit::parse(full).unwrap().full().unwrap().as_str(),
            full
        );
        assert_eq!(
            MergeCommit::parse("709D658DC5B6").unwrap(),
            MergeCommit::Abbreviated("709d658dc5b6".into())
        );
        assert!(MergeCommit::parse("709d65").is_err());
        assert!(MergeCommit::parse("709d658xc5b6").is_err());
        assert!(MergeCommit::parse(&"a".repeat(41)).is_err());
    }

    #[test]
    fn accepts_sha1_and_sha256_and_lowers_case() {
        let s = CommitSha::parse("6113728F27AE82C7B1A177C8D03F9E96E0ADF246").unwrap();
        assert_eq!(s.as_str(), "6113728f27ae82c7b1a177c8d03f9e96e0adf246");
        assert!(CommitSha::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(CommitSha::parse("abc"), Err(ShaError::Length(3)));
        assert_eq!(CommitSha::parse(&"g".repeat(40)), Err(ShaError::NotHex));
        assert_eq!(CommitSha::parse(&"a".repeat(41)), Err(ShaError::Length(41)));
    }

    #[test]
    fn all_zero_ids_are_absent_in_both_lengths() {
        assert_eq!(CommitSha::parse_optional(&"0".repeat(40)), Ok(None));
        assert_eq!(CommitSha::parse_optional(&"0".repeat(64)), Ok(None));
        assert!(CommitSha::parse_optional(&"0".repeat(39)).is_err());
        assert!(CommitSha::parse_optional(&format!("{}1", "0".repeat(39)))
            .unwrap()
            .is_some());
    }
}
