//! `Revision`: what Flux reports as `revision`, typed (reference flux-events §4, RFC-0005).
//!
//! `[<named pointer>][@<algo>:<checksum>]` with the digest after the LAST `@`; legacy
//! `<pointer>/<sha>` and bare `<sha>` from before Flux 0.40; Helm chart versions with an
//! optional `+<digest prefix>`. A `sha1` checksum is a Git commit; a 64-hex `sha256` checksum
//! is a commit of a SHA-256 repository *or* an OCI/bucket digest — the syntax cannot tell, so
//! it is a commit *candidate*, confirmed only when a push recorded that sha.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::CommitSha;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Revision {
    /// `main@sha1:<hex>`, `refs/heads/main@sha1:<hex>`, `sha1:<hex>`, `latest@sha256:<hex>`.
    Checksum {
        pointer: Option<String>,
        algo: String,
        digest: String,
    },
    /// Legacy `main/<sha>` or `HEAD/<sha>`.
    Legacy { pointer: String, sha: CommitSha },
    /// Legacy bare `<sha>`.
    Bare(CommitSha),
    /// Helm chart version, optionally with `+<digest prefix>`: `6.5.4`, `6.5.4+0a1b2c3d4e5f`.
    Version {
        version: String,
        digest: Option<String>,
    },
    /// Anything else, kept verbatim (free-text `originRevision`, say).
    Other(String),
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Revision {
    /// Never fails: what is not recognised is `Other`.
    pub fn parse(s: &str) -> Revision {
        let s = s.trim();
        // `<pointer>@<algo>:<digest>` or `<algo>:<digest>`: the digest follows the LAST '@'.
        let (pointer, rest) = match s.rfind('@') {
            Some(i) => (Some(&s[..i]), &s[i + 1..]),
            None => (None, s),
        };
        if let Some((algo, digest)) = rest.split_once(':') {
            let algo_ok = !algo.is_empty() && algo.bytes().all(|b| b.is_ascii_alphanumeric());
            if algo_ok && is_hex(digest) && pointer.is_none_or(|p| !p.is_empty()) {
                return Revision::Checksum {
                    pointer: pointer.map(str::to_string),
                    algo: algo.to_ascii_lowercase(),
                    digest: digest.to_ascii_lowercase(),
                };
            }
        }
        if pointer.is_none() {
            if let Ok(sha) = CommitSha::parse(s) {
                return Revision::Bare(sha);
            }
            if let Some((p, sha)) = s.rsplit_once('/') {
                if let (false, Ok(sha)) = (p.is_empty(), CommitSha::parse(sha)) {
                    return Revision::Legacy {
                        pointer: p.to_string(),
                        sha,
                    };
                }
            }
            if is_chart_version(s) {
                return match s.split_once('+') {
                    Some((v, d)) if is_hex(d) => Revision::Version {
                        version: v.to_string(),
                        digest: Some(d.to_ascii_lowercase()),
                    },
                    _ => Revision::Version {
                        version: s.to_string(),
                        digest: None,
                    },
                };
            }
        }
        Revision::Other(s.to_string())
    }

    /// The Git commit this revision names, if it can name one (see the module note on
    /// sha256).
    pub fn commit(&self) -> Option<CommitSha> {
        match self {
            Revision::Checksum { algo, digest, .. } if algo == "sha1" || algo == "sha256" => {
                CommitSha::parse(digest).ok()
            }
            Revision::Legacy { sha, .. } | Revision::Bare(sha) => Some(sha.clone()),
            _ => None,
        }
    }

    /// The abbreviated commit a Helm chart version's build metadata carries: a HelmChart
    /// built from a GitRepository with `reconcileStrategy: Revision` is versioned
    /// `<version>+<first 12 hex of the source commit>`. Only a candidate: the same syntax
    /// carries an OCI digest prefix, so it names a commit only when exactly one pushed
    /// commit has that prefix.
    pub fn commit_prefix(&self) -> Option<&str> {
        match self {
            Revision::Version {
                digest: Some(d), ..
            } if (7..40).contains(&d.len()) => Some(d),
            _ => None,
        }
    }

    /// True when the revision is certainly a Git commit (sha1, or a legacy form).
    pub fn is_certainly_git(&self) -> bool {
        match self {
            Revision::Checksum { algo, digest, .. } => algo == "sha1" && digest.len() == 40,
            Revision::Legacy { .. } | Revision::Bare(_) => true,
            _ => false,
        }
    }

    /// The named pointer (`main`, `refs/heads/main`, `v1.0.0`), if any.
    pub fn pointer(&self) -> Option<&str> {
        match self {
            Revision::Checksum { pointer, .. } => pointer.as_deref(),
            Revision::Legacy { pointer, .. } => Some(pointer),
            _ => None,
        }
    }

    /// The full refs the pointer may stand for: `refs/...` as is; a short name may be a
    /// branch or a tag (Flux reports both as `<name>@sha1:…`).
    pub fn candidate_refs(&self) -> Vec<String> {
        match self.pointer() {
            None | Some("HEAD") => vec![],
            Some(p) if p.starts_with("refs/") => vec![p.to_string()],
            Some(p) => vec![format!("refs/heads/{p}"), format!("refs/tags/{p}")],
        }
    }
}

/// `MAJOR.MINOR.PATCH[-pre][+build]`, leniently: digits and dots first.
fn is_chart_version(s: &str) -> bool {
    let core = s.split(['-', '+']).next().unwrap_or_default();
    let parts: Vec<&str> = core.trim_start_matches('v').split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Revision::Checksum {
                pointer: Some(p),
                algo,
                digest,
            } => write!(f, "{p}@{algo}:{digest}"),
            Revision::Checksum {
                pointer: None,
                algo,
                digest,
            } => write!(f, "{algo}:{digest}"),
            Revision::Legacy { pointer, sha } => write!(f, "{pointer}/{sha}"),
            Revision::Bare(sha) => write!(f, "{sha}"),
            Revision::Version {
                version,
                digest: Some(d),
            } => write!(f, "{version}+{d}"),
            Revision::Version {
                version,
                digest: None,
            } => f.write_str(version),
            Revision::Other(s) => f.write_str(s),
        }
    }
}

impl Serialize for Revision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Revision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Revision::parse(&String::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SHA1: &str = "731f7eaddfb6af01cb2173e18f0f75b0ba780ef1";

    #[test]
    fn every_format_of_the_reference() {
        let sha256 = "a".repeat(64);
        let cases: Vec<(String, Option<&str>, bool, Vec<&str>)> = vec![
            // (input, commit, certainly git, candidate refs)
            (
                format!("main@sha1:{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/heads/main", "refs/tags/main"],
            ),
            (
                format!("feature/x@sha1:{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/heads/feature/x", "refs/tags/feature/x"],
            ),
            (
                format!("v1.0.0@sha1:{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/heads/v1.0.0", "refs/tags/v1.0.0"],
            ),
            (
                format!("refs/heads/main@sha1:{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/heads/main"],
            ),
            (
                format!("refs/pull/420/head@sha1:{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/pull/420/head"],
            ),
            (format!("sha1:{SHA1}"), Some(SHA1), true, vec![]),
            (
                format!("main/{SHA1}"),
                Some(SHA1),
                true,
                vec!["refs/heads/main", "refs/tags/main"],
            ),
            (format!("HEAD/{SHA1}"), Some(SHA1), true, vec![]),
            (SHA1.to_string(), Some(SHA1), true, vec![]),
            (
                format!("main@sha256:{sha256}"),
                Some(&sha256),
                false,
                vec!["refs/heads/main", "refs/tags/main"],
            ),
            (
                format!("latest@sha256:{sha256}"),
                Some(&sha256),
                false,
                vec!["refs/heads/latest", "refs/tags/latest"],
            ),
            (format!("sha256:{sha256}"), Some(&sha256), false, vec![]),
            ("sha256:0a1b2c".to_string(), None, false, vec![]),
            ("6.0.0".to_string(), None, false, vec![]),
            ("6.5.4+0a1b2c3d4e5f".to_string(), None, false, vec![]),
            ("not a revision".to_string(), None, false, vec![]),
        ];
        for (input, commit, git, refs) in cases {
            let r = Revision::parse(&input);
            assert_eq!(
                r.commit().as_ref().map(CommitSha::as_str),
                commit,
                "{input}"
            );
            assert_eq!(r.is_certainly_git(), git, "{input}");
            assert_eq!(r.candidate_refs(), refs, "{input}");
            assert_eq!(r.to_string(), input, "{input} round-trips");
        }
        assert_eq!(
            Revision::parse("6.5.4+0a1b2c3d4e5f"),
            Revision::Version {
                version: "6.5.4".into(),
                digest: Some("0a1b2c3d4e5f".into())
            }
        );
        assert!(matches!(
            Revision::parse("6.0.0"),
            Revision::Version { digest: None, .. }
        ));
        assert!(matches!(
            Revision::parse("sha256:0a1b2c"),
            Revision::Checksum { .. }
        ));
    }

    #[test]
    fn the_digest_follows_the_last_at() {
        let r = Revision::parse(&format!("user@host@sha1:{SHA1}"));
        assert_eq!(r.pointer(), Some("user@host"));
        assert_eq!(r.commit().unwrap().as_str(), SHA1);
    }

    fn pointer() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9._/-]{0,20}[a-z0-9]"
            .prop_filter("no consecutive or trailing separators", |p| {
                !p.contains("//") && !p.ends_with('/')
            })
    }

    proptest! {
        #[test]
        fn parse_display_round_trips(p in pointer(), digest in "[0-9a-f]{40}|[0-9a-f]{64}", algo in "sha1|sha256|sha512") {
            for s in [format!("{p}@{algo}:{digest}"), format!("{algo}:{digest}")] {
                let r = Revision::parse(&s);
                prop_assert_eq!(r.to_string(), s.clone());
                prop_assert_eq!(Revision::parse(&r.to_string()), r);
            }
        }

        #[test]
        fn any_string_parses_and_display_is_stable(s in "\\PC{0,60}") {
            let r = Revision::parse(&s);
            let again = Revision::parse(&r.to_string());
            prop_assert_eq!(again.to_string(), r.to_string());
        }
    }
}
