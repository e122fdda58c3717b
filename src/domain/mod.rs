//! Domain types shared by every layer: commit ids, repository keys, Git refs.
//!
//! Each type is built only through a `parse` that returns a typed error ("parse, don't
//! validate"): once a value of one of these types exists, nobody re-checks the string.

mod git_ref;
mod repo;
mod revision;
mod sha;

pub use git_ref::{GitRef, GitRefError};
pub use repo::{RepoKey, RepoKeyError};
pub use revision::Revision;
pub use sha::{CommitSha, MergeCommit, ShaError};
