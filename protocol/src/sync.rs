//! Project sync: the manifest of the coordinator's project a `Hello` carries (path, size,
//! SHA-256 of each file), what the agent found different in its `project_dir` (in its
//! `Welcome`), and the header and answer of a pushed file.
//!
//! Like pre-flight, the check rides on the handshake as defaulted fields: an agent that predates
//! them answers without a report (`Welcome.sync` is `None`), which the coordinator shows as "not
//! checked". A push is one bidirectional stream per file after the `Welcome`: a [`PushHeader`]
//! frame, exactly `size` raw bytes, then the agent's one-frame [`PushReply`]. The agent accepts
//! only files its own report of this session named, so a push can only mend what the check
//! found.

use serde::{Deserialize, Serialize};

/// The project as the coordinator has it, to compare with the agent's `project_dir`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncRequest {
    /// The project's directory on the agent's host (the source's `project_dir`).
    #[serde(default)]
    pub project_dir: String,
    /// Every file of the project, paths relative to its root (checked like result paths).
    #[serde(default)]
    pub files: Vec<ManifestEntry>,
    /// The coordinator will push what differs: the agent creates `project_dir` when missing
    /// and accepts push streams for the files its report names.
    #[serde(default)]
    pub push: bool,
}

/// One file of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Relative to the project root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
    /// The owner may execute it (a script run as `./run.sh`).
    #[serde(default)]
    pub executable: bool,
}

/// What the agent found, file by file, where its copy is not the coordinator's.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// Files that differ, in manifest order.
    #[serde(default)]
    pub differs: Vec<SyncDiff>,
    /// The comparison could not be made at all (the request was malformed, `project_dir`
    /// could not be created): what went wrong.
    #[serde(default)]
    pub error: Option<String>,
}

/// One file that differs, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDiff {
    pub path: String,
    /// One of [`diff`]'s names (a newer agent may add more; shown as it is).
    pub kind: String,
}

/// How a file differs.
pub mod diff {
    /// Not there at all.
    pub const MISSING: &str = "missing";
    /// Other content.
    pub const DIFFERS: &str = "differs";
    /// Same content, but the executable bit is not the coordinator's.
    pub const MODE: &str = "mode";
    /// Something that is not a regular file (a directory) is in its place.
    pub const NOT_A_FILE: &str = "not_a_file";
}

/// The first frame of a push stream; `size` raw bytes follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushHeader {
    /// As in the [`SyncRequest`] of this session.
    pub project_dir: String,
    pub path: String,
    pub size: u64,
    /// SHA-256 of the bytes, lowercase hex: the file is renamed into place only if it matches.
    pub sha256: String,
    #[serde(default)]
    pub executable: bool,
}

/// The agent's answer on a push stream, once the file is in place or refused.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PushReply {
    /// `None`: verified and renamed into place; else why not (nothing was left behind).
    #[serde(default)]
    pub error: Option<String>,
}

/// Largest push header frame an agent reads (a path is at most `MAX_PATH_LEN`).
pub const MAX_PUSH_HEADER: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_missing_fields_default() {
        let request = SyncRequest {
            project_dir: "/srv/p".into(),
            files: vec![ManifestEntry {
                path: "train.py".into(),
                size: 3,
                sha256: "ab".repeat(32),
                executable: true,
            }],
            push: true,
        };
        let bytes = crate::encode(&request).unwrap();
        assert_eq!(
            crate::decode::<SyncRequest>(&bytes[crate::PREFIX_LEN..]).unwrap(),
            request
        );
        // An empty map (a peer that knows none of the fields) decodes to the defaults.
        let empty =
            rmp_serde::to_vec_named(&std::collections::BTreeMap::<String, u8>::new()).unwrap();
        assert_eq!(
            rmp_serde::from_slice::<SyncReport>(&empty).unwrap(),
            SyncReport::default()
        );
        assert_eq!(
            rmp_serde::from_slice::<PushReply>(&empty).unwrap(),
            PushReply::default()
        );
    }
}
