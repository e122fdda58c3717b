//! `RepoKey`: one canonical name for a repository however its URL was written.
//!
//! The same repository reaches us as an https clone URL from one host's push, an scp-like
//! ssh URL from another field, and later as Flux's `GitRepository.spec.url`. The key is what
//! all of them have in common: `host/path`, lowercase, without scheme, user, port, `.git`, and
//! with the hosts' own path decorations (`_git`, `scm`, `/-/…`, `v3`) removed. The rules are
//! those of `shared/reference/git-webhooks.md` §7.

use std::fmt;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

/// Canonical repository key, e.g. `github.com/org/repo` or `dev.azure.com/org/project/repo`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepoKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoKeyError {
    #[error("repository URL is empty")]
    Empty,
    #[error("repository URL has no host")]
    NoHost,
    #[error("repository URL has no repository path")]
    NoPath,
    #[error("repository URL is not valid UTF-8 once percent-decoded")]
    Encoding,
}

impl RepoKey {
    /// Canonicalises any clone or browse URL: `https://…`, `ssh://…`, scp-like `user@host:path`,
    /// or an already canonical `host/path`.
    pub fn from_url(url: &str) -> Result<Self, RepoKeyError> {
        let url = url.trim();
        if url.is_empty() {
            return Err(RepoKeyError::Empty);
        }
        // Query and fragment never name the repository.
        let url = url.split(['?', '#']).next().unwrap_or_default();
        let rest = match url.find("://") {
            Some(i) => &url[i + 3..],
            None => url,
        };
        // scp-like `git@host:org/repo.git`: a ':' before the first '/' that is not a port.
        let (authority, path) = match url.find("://") {
            None => match (rest.find(':'), rest.find('/')) {
                (Some(c), slash) if slash.is_none_or(|s| c < s) && !rest.starts_with('[') => {
                    let after = &rest[c + 1..];
                    let is_port = after
                        .split('/')
                        .next()
                        .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                    if is_port {
                        split_authority(rest)
                    } else {
                        (&rest[..c], after)
                    }
                }
                _ => split_authority(rest),
            },
            Some(_) => split_authority(rest),
        };
        let host_port = authority.rsplit('@').next().unwrap_or_default();
        let host = strip_port(host_port).to_lowercase();
        if host.is_empty() {
            return Err(RepoKeyError::NoHost);
        }
        if !host
            .chars()
            .all(|c| c.is_alphanumeric() || "-._[]:".contains(c))
        {
            return Err(RepoKeyError::Encoding);
        }
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| RepoKeyError::Encoding)?;
        // A key must read back as itself: characters that would be taken for a query,
        // fragment or escape the second time (and never occur in a repository's name) are
        // refused rather than kept.
        if decoded.contains(['?', '#', '%']) || decoded.chars().any(char::is_control) {
            return Err(RepoKeyError::Encoding);
        }
        let segments: Vec<String> = decoded
            .split('/')
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
            .collect();
        // Rewrite until nothing changes, so a key rewritten once is not rewritten again.
        let (mut host, mut segments) = (host, segments);
        loop {
            let before = (host.clone(), segments.clone());
            if let Some(last) = segments.last_mut() {
                while let Some(stripped) = last.strip_suffix(".git") {
                    *last = stripped.trim_end().to_string();
                }
            }
            segments.retain(|s| !s.is_empty());
            (host, segments) = provider_rewrite(host, segments);
            if (&host, &segments) == (&before.0, &before.1) {
                break;
            }
        }
        if segments.is_empty() {
            return Err(RepoKeyError::NoPath);
        }
        Ok(RepoKey(format!("{host}/{}", segments.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn split_authority(rest: &str) -> (&str, &str) {
    match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    }
}

fn strip_port(host_port: &str) -> &str {
    if host_port.starts_with('[') {
        // IPv6 literal: kept with its brackets, so the key's host reads back as a host.
        return match host_port.find(']') {
            Some(end) => &host_port[..=end],
            None => host_port,
        };
    }
    host_port.split(':').next().unwrap_or_default()
}

/// The hosts' own path decorations, removed so every URL form of a repository meets.
fn provider_rewrite(host: String, mut seg: Vec<String>) -> (String, Vec<String>) {
    // Azure DevOps over ssh: ssh.dev.azure.com/v3/{org}/{project}/{repo},
    // legacy vs-ssh.visualstudio.com/v3/{org}/{project}/{repo}.
    if (host == "ssh.dev.azure.com" || host == "vs-ssh.visualstudio.com")
        && seg.first().is_some_and(|s| s == "v3")
    {
        seg.remove(0);
        return ("dev.azure.com".to_string(), seg);
    }
    // Azure DevOps over https: …/{org}/[DefaultCollection/]{project}/_git/{repo};
    // legacy {org}.visualstudio.com/[DefaultCollection/]{project}/_git/{repo}.
    if let Some(i) = seg.iter().position(|s| s == "_git") {
        let repo = seg.get(i + 1).cloned();
        let mut before: Vec<String> = seg[..i]
            .iter()
            .filter(|s| *s != "defaultcollection")
            .cloned()
            .collect();
        let mut host = host;
        if let Some(org) = host.strip_suffix(".visualstudio.com") {
            before.insert(0, org.to_string());
            host = "dev.azure.com".to_string();
        }
        if let Some(repo) = repo {
            if host == "dev.azure.com" && before.len() == 1 {
                // `/{org}/_git/{repo}`: the project is named like the repository.
                before.push(repo.clone());
            }
            before.push(repo);
        }
        return (host, before);
    }
    // Bitbucket Data Center: https `/scm/{PROJ}/{repo}` and ssh `/{PROJ}/{repo}` meet.
    if seg.len() >= 3 && seg[0] == "scm" {
        seg.remove(0);
        return (host, seg);
    }
    // GitLab UI suffixes: `group/sub/repo/-/tree/main`.
    if let Some(i) = seg.iter().position(|s| s == "-") {
        seg.truncate(i);
    }
    (host, seg)
}

impl fmt::Display for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RepoKey({})", self.0)
    }
}

impl TryFrom<String> for RepoKey {
    type Error = RepoKeyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RepoKey::from_url(&s)
    }
}

impl From<RepoKey> for String {
    fn from(k: RepoKey) -> String {
        k.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(url: &str) -> String {
        RepoKey::from_url(url)
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .0
    }

    #[test]
    fn every_url_form_of_one_repository_is_one_key() {
        let cases: &[(&str, &str)] = &[
            // GitHub: https, scp-like ssh, ssh://, browse URL with a token in userinfo.
            ("https://github.com/Codertocat/Hello-World.git", "github.com/codertocat/hello-world"),
            ("git@github.com:Codertocat/Hello-World.git", "github.com/codertocat/hello-world"),
            ("ssh://git@github.com/Codertocat/Hello-World", "github.com/codertocat/hello-world"),
            ("https://x-access-token:abc@GitHub.com/Codertocat/Hello-World/", "github.com/codertocat/hello-world"),
            ("github.com/codertocat/hello-world", "github.com/codertocat/hello-world"),
            // GitLab: nested groups kept, UI suffix stripped, port dropped.
            ("https://gitlab.com/group/sub/repo.git", "gitlab.com/group/sub/repo"),
            ("git@gitlab.com:group/sub/repo.git", "gitlab.com/group/sub/repo"),
            ("https://gitlab.com/group/sub/repo/-/tree/main", "gitlab.com/group/sub/repo"),
            ("http://example.com:8080/mike/diaspora.git", "example.com/mike/diaspora"),
            // Azure DevOps, every form.
            ("https://dev.azure.com/org/Proj/_git/Repo", "dev.azure.com/org/proj/repo"),
            ("https://org@dev.azure.com/org/Proj/_git/Repo", "dev.azure.com/org/proj/repo"),
            ("ssh://git@ssh.dev.azure.com/v3/org/Proj/Repo", "dev.azure.com/org/proj/repo"),
            ("git@ssh.dev.azure.com:v3/org/Proj/Repo", "dev.azure.com/org/proj/repo"),
            ("https://org.visualstudio.com/DefaultCollection/Proj/_git/Repo", "dev.azure.com/org/proj/repo"),
            ("https://org.visualstudio.com/Proj/_git/Repo", "dev.azure.com/org/proj/repo"),
            ("org@vs-ssh.visualstudio.com:v3/org/Proj/Repo", "dev.azure.com/org/proj/repo"),
            ("https://dev.azure.com/org/My%20Project/_git/My%20Repo", "dev.azure.com/org/my project/my repo"),
            ("https://dev.azure.com/fabrikam/_git/Fabrikam", "dev.azure.com/fabrikam/fabrikam/fabrikam"),
            ("https://dev.azure.com/fabrikam-fiber-inc/DefaultCollection/_git/Fabrikam-Fiber-Git",
             "dev.azure.com/fabrikam-fiber-inc/fabrikam-fiber-git/fabrikam-fiber-git"),
            // Bitbucket Data Center: scm prefix and ssh port 7999.
            ("https://bitbucket.example.com/scm/PROJ/repo.git", "bitbucket.example.com/proj/repo"),
            ("ssh://git@bitbucket.example.com:7999/PROJ/repo.git", "bitbucket.example.com/proj/repo"),
            ("https://bitbucket.example.com/scm/~jdoe/repo.git", "bitbucket.example.com/~jdoe/repo"),
            // Bitbucket Cloud browse link.
            ("https://bitbucket.org/team_name/repo_name", "bitbucket.org/team_name/repo_name"),
            // Gitea on a port.
            ("http://localhost:3000/example/example.git", "localhost/example/example"),
            ("git@localhost:example/example.git", "localhost/example/example"),
            ("ssh://git@localhost:2222/example/example.git", "localhost/example/example"),
        ];
        for (url, want) in cases {
            assert_eq!(key(url), *want, "{url}");
        }
    }

    #[test]
    fn rejects_what_names_no_repository() {
        assert_eq!(RepoKey::from_url("  "), Err(RepoKeyError::Empty));
        assert_eq!(
            RepoKey::from_url("https://github.com/"),
            Err(RepoKeyError::NoPath)
        );
        assert_eq!(
            RepoKey::from_url("https:///org/repo"),
            Err(RepoKeyError::NoHost)
        );
    }

    #[test]
    fn canonical_keys_are_fixed_points() {
        for url in [
            "https://dev.azure.com/org/Proj/_git/Repo",
            "git@gitlab.com:a/b/c.git",
        ] {
            let k = key(url);
            assert_eq!(key(&k), k);
        }
    }

    /// Found by the `repo_url` fuzz target: keys that became other keys when read again.
    #[test]
    fn a_key_reads_back_as_itself() {
        let crash = "main@sha1shttps://dev.azure.c/grpuo/sub/repo/-/-gi\u{fffd}\u{1f}tolle:1f7/hre.cossction/_git/Fabrikam";
        for url in [
            crash,
            "https://dev.azure.com/o/p/_git/r/-/tree/main",
            "https://h.example/scm/scm/proj/repo",
            "https://h.example/a/b.git.git",
            "https://h.example/a/_git/_git/b",
            "https://dev.ain//dev.ainc/fa\u{fffd}CDleuollion/_git/.git/kam-Fiber-Git/c4",
            "https://[::1]:8080/a/b",
            "https://\u{c7}\u{c7}.visualstudio.com/p/_git/r",
            "https://h.example/a/b%20",
            "https://dev.azure.com/org/My%20Project/_git/repo",
        ] {
            if let Ok(k) = RepoKey::from_url(url) {
                assert_eq!(RepoKey::from_url(k.as_str()), Ok(k.clone()), "{url}");
            }
        }
        assert_eq!(key("https://[::1]:8080/a/b"), "[::1]/a/b");
        assert_eq!(
            key("https://h.example/scm/scm/proj/repo"),
            "h.example/proj/repo"
        );
        assert_eq!(key("https://h.example/a/b.git.git"), "h.example/a/b");
        assert_eq!(
            key("https://dev.azure.com/org/My%20Project/_git/repo"),
            "dev.azure.com/org/my project/repo"
        );
        for url in [
            "https://h.example/a/b%2541",
            "https://h.example/a%3Fx/b",
            "https://h.example/a/b%00",
            "https://\u{b}\0h/a/b",
            "https://o%41.visualstudio.com/p/_git/r",
        ] {
            assert_eq!(RepoKey::from_url(url), Err(RepoKeyError::Encoding), "{url}");
        }
    }
}
