//! Where the portable agent binaries that `agent deploy` copies live, and what they are named:
//! `hsm-agent-<arch>-linux`, built by `tools/build-agent.sh` into `target/dist/`.
//!
//! Pure functions; the deploy code does the `uname -sm` and the file checks.

use std::path::{Path, PathBuf};

/// The directory, relative to a checkout's root, that `tools/build-agent.sh` writes into.
pub const DIST_DIR: &str = "target/dist";

/// A remote host `agent deploy` has no agent binary kind for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no hsm-agent build for {os} {arch}: agents run on Linux x86_64 and aarch64 \
     (`uname -sm` on the host says which it is)"
)]
pub struct UnsupportedPlatform {
    pub os: String,
    pub arch: String,
}

/// The file name of the agent binary for a host whose `uname -s` is `os` and `uname -m` is
/// `arch`, e.g. `hsm-agent-x86_64-linux`. `amd64` and `arm64` (what some systems print) are
/// the same machines as `x86_64` and `aarch64`.
pub fn binary_name(os: &str, arch: &str) -> Result<String, UnsupportedPlatform> {
    let unsupported = || UnsupportedPlatform {
        os: os.to_string(),
        arch: arch.to_string(),
    };
    if !os.trim().eq_ignore_ascii_case("linux") {
        return Err(unsupported());
    }
    let arch_name = match arch.trim() {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "aarch64",
        _ => return Err(unsupported()),
    };
    Ok(format!("hsm-agent-{arch_name}-linux"))
}

/// [`binary_name`] for the output of `uname -sm` (`Linux x86_64`).
pub fn binary_name_for_uname(uname_sm: &str) -> Result<String, UnsupportedPlatform> {
    let mut words = uname_sm.split_whitespace();
    let os = words.next().unwrap_or("");
    let arch = words.next().unwrap_or("");
    binary_name(os, arch)
}

/// Where to look for the agent binary `name`, first match wins, for a coordinator installed at
/// `coordinator_exe`: beside it (an install that ships both, e.g. `~/.cargo/bin`), then the
/// `dist/` one level up, which is the checkout's `target/dist/` when the coordinator runs from
/// `target/<profile>/` (for an installed coordinator it names a directory that rarely exists).
/// Never the plain `hsm-agent` beside it: that one is linked against this machine's C library,
/// which a login node's may be older than.
pub fn candidates(coordinator_exe: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = coordinator_exe.parent() {
        out.push(dir.join(name));
        // `target/debug/` or `target/release/` (or `$CARGO_TARGET_DIR/...`) → `target/dist/`.
        if let Some(target) = dir.parent() {
            out.push(target.join("dist").join(name));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_uname() {
        assert_eq!(
            binary_name("Linux", "x86_64").unwrap(),
            "hsm-agent-x86_64-linux"
        );
        assert_eq!(
            binary_name("Linux", "amd64").unwrap(),
            "hsm-agent-x86_64-linux"
        );
        assert_eq!(
            binary_name("Linux", "aarch64").unwrap(),
            "hsm-agent-aarch64-linux"
        );
        assert_eq!(
            binary_name("linux", "arm64").unwrap(),
            "hsm-agent-aarch64-linux"
        );
        assert_eq!(
            binary_name_for_uname("Linux x86_64\n").unwrap(),
            "hsm-agent-x86_64-linux"
        );
    }

    #[test]
    fn other_platforms_are_refused_by_name() {
        let err = binary_name_for_uname("Darwin arm64").unwrap_err();
        assert_eq!(err.os, "Darwin");
        assert!(err.to_string().contains("Darwin arm64"), "{err}");
        assert!(binary_name("Linux", "ppc64le").is_err());
        assert!(binary_name_for_uname("").is_err());
    }

    #[test]
    fn looks_beside_the_coordinator_then_in_the_checkout_dist_dir() {
        let name = "hsm-agent-x86_64-linux";
        assert_eq!(
            candidates(Path::new("/src/hsm/target/debug/hsm-coordinator"), name),
            vec![
                PathBuf::from("/src/hsm/target/debug/hsm-agent-x86_64-linux"),
                PathBuf::from("/src/hsm/target/dist/hsm-agent-x86_64-linux"),
            ]
        );
        assert_eq!(
            candidates(Path::new("/home/me/.cargo/bin/hsm-coordinator"), name),
            vec![
                PathBuf::from("/home/me/.cargo/bin/hsm-agent-x86_64-linux"),
                PathBuf::from("/home/me/.cargo/dist/hsm-agent-x86_64-linux"),
            ]
        );
        assert_eq!(
            Path::new(DIST_DIR).join(name),
            PathBuf::from("/src/hsm/target/dist/hsm-agent-x86_64-linux")
                .strip_prefix("/src/hsm")
                .unwrap()
        );
    }
}
