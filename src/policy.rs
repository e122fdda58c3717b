//! The approval policy (contract §10), pure: which clusters are under it, what counts as a
//! sufficient approval, who is exempt. The ledger stores facts; this decides what they mean,
//! so changing a setting changes every answer at once, with nothing to re-project.

use std::time::Duration;

use serde::Serialize;

use crate::ledger::records::{ApprovalRecord, CommitRecord};

/// `FLUXTRAIL_APPROVAL_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Cluster name patterns (`*` matches any run of characters); empty: no cluster.
    pub required: Vec<String>,
    /// Distinct approvers other than the pull request's author.
    pub min_approvers: usize,
    /// Logins whose commits need no approval (pusher, author name or e-mail), lowercase.
    pub exempt: Vec<String>,
    /// How long after the first apply on a cluster an approval may still arrive.
    pub grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            required: vec![],
            min_approvers: 1,
            exempt: vec![],
            grace: Duration::from_secs(600),
        }
    }
}

/// What the policy says of one commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The approval record is sufficient.
    pub approved: bool,
    /// The exemption that applies (the matching login), if any.
    pub exempt: Option<String>,
    /// Why it is not approved: `no_pull_request` or `too_few_approvers`.
    pub reason: Option<&'static str>,
}

impl Verdict {
    /// Neither approved nor exempt.
    pub fn unapproved(&self) -> bool {
        !self.approved && self.exempt.is_none()
    }
}

impl Policy {
    /// Parses the comma-separated lists of the settings.
    pub fn new(required: &str, min_approvers: usize, exempt: &str, grace: Duration) -> Self {
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        };
        Policy {
            required: list(required),
            min_approvers,
            exempt: list(exempt).into_iter().map(|e| e.to_lowercase()).collect(),
            grace,
        }
    }

    /// Whether `cluster` is under the policy.
    pub fn covers(&self, cluster: &str) -> bool {
        self.required.iter().any(|p| glob(p, cluster))
    }

    /// The verdict on a commit from its records (either may be unknown).
    pub fn verdict(
        &self,
        commit: Option<&CommitRecord>,
        approval: Option<&ApprovalRecord>,
    ) -> Verdict {
        let (approved, reason) = match approval {
            None => (false, Some("no_pull_request")),
            Some(a) => {
                let author = a.author.as_deref().map(str::to_lowercase);
                let mut others: Vec<String> = a
                    .approvers
                    .iter()
                    .map(|u| u.to_lowercase())
                    .filter(|u| Some(u) != author.as_ref())
                    .collect();
                others.sort();
                others.dedup();
                // An approval record exists only for a merged pull request.
                if others.len() >= self.min_approvers {
                    (true, None)
                } else {
                    (false, Some("too_few_approvers"))
                }
            }
        };
        let exempt = commit.and_then(|c| {
            let candidates = [
                c.pushed_by.as_deref(),
                c.author.as_ref().and_then(|a| a.name.as_deref()),
                c.author.as_ref().and_then(|a| a.email.as_deref()),
            ];
            candidates.into_iter().flatten().find_map(|who| {
                let who = who.to_lowercase();
                self.exempt.contains(&who).then_some(who)
            })
        });
        Verdict {
            approved,
            exempt,
            reason: (!approved).then_some(reason).flatten(),
        }
    }
}

/// `*` matches any run of characters (none included); everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::Provider;

    #[test]
    fn patterns_match_whole_names() {
        for (p, t, want) in [
            ("prod-*", "prod-eu", true),
            ("prod-*", "prod-", true),
            ("prod-*", "staging-prod-eu", false),
            ("payments", "payments", true),
            ("payments", "payments-2", false),
            ("*", "anything", true),
            ("*-eu-*", "prod-eu-1", true),
            ("*-eu-*", "prod-us-1", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("p*d*x", "prodx", true),
        ] {
            assert_eq!(glob(p, t), want, "{p} ~ {t}");
        }
        let policy = Policy::new(" prod-*, payments ,", 1, "", Duration::ZERO);
        assert!(policy.covers("prod-eu") && policy.covers("payments"));
        assert!(!policy.covers("staging") && !Policy::default().covers("prod"));
    }

    fn approval(author: Option<&str>, approvers: &[&str]) -> ApprovalRecord {
        ApprovalRecord {
            provider: Provider::GitHub,
            repository: "github.com/acme/fleet".into(),
            number: 42,
            url: None,
            author: author.map(str::to_string),
            merged_by: Some("lead".into()),
            merged_at: Some("2026-11-30T10:00:00Z".into()),
            target_ref: Some("refs/heads/main".into()),
            head_sha: None,
            approvers: approvers.iter().map(|s| s.to_string()).collect(),
            reviews: vec![],
        }
    }

    #[test]
    fn the_author_does_not_approve_their_own_change() {
        let p = Policy::new("prod-*", 1, "", Duration::ZERO);
        let v = p.verdict(None, Some(&approval(Some("Alice"), &["alice"])));
        assert_eq!(v.reason, Some("too_few_approvers"));
        assert!(v.unapproved());
        assert!(
            p.verdict(None, Some(&approval(Some("alice"), &["alice", "bob"])))
                .approved
        );
        let two = Policy::new("prod-*", 2, "", Duration::ZERO);
        assert!(
            !two.verdict(None, Some(&approval(Some("alice"), &["alice", "bob"])))
                .approved
        );
        assert!(
            two.verdict(None, Some(&approval(None, &["carol", "bob"])))
                .approved
        );
        let none = p.verdict(None, None);
        assert_eq!(none.reason, Some("no_pull_request"));
        let zero = Policy::new("prod-*", 0, "", Duration::ZERO);
        assert!(zero.verdict(None, Some(&approval(None, &[]))).approved);
        assert!(
            !zero.verdict(None, None).approved,
            "no merge, nothing to approve"
        );
    }

    #[test]
    fn exemptions_match_the_pusher_or_the_author() {
        let p = Policy::new(
            "prod-*",
            1,
            "Flux-Image-Automation, bot@acme.io",
            Duration::ZERO,
        );
        let mut c: CommitRecord = serde_json::from_value(serde_json::json!({
            "sha": "a".repeat(40), "repository": "github.com/acme/fleet",
            "repositoryUrl": "https://github.com/acme/fleet", "provider": "github",
            "refs": ["refs/heads/main"], "message": "m", "author": {"name": "x", "email": "BOT@acme.io"},
            "timestamp": null, "url": null, "pushedAt": "2026-11-30T10:00:00Z", "pushedBy": "someone"
        }))
        .unwrap();
        let v = p.verdict(Some(&c), None);
        assert_eq!(v.exempt.as_deref(), Some("bot@acme.io"));
        assert!(!v.approved && !v.unapproved());
        c.author = None;
        c.pushed_by = Some("flux-image-automation".into());
        assert_eq!(
            p.verdict(Some(&c), None).exempt.as_deref(),
            Some("flux-image-automation")
        );
        c.pushed_by = Some("alice".into());
        assert!(p.verdict(Some(&c), None).unapproved());
    }
}
