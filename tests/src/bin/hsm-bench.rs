//! `hsm-bench`: dispatch throughput of the local source against `xargs -P2` and a plain spawn
//! loop, side by side in one run, over the same N `/bin/true` commands with 2 in flight.
//! Writes a Markdown results file. A measurement, never a pass/fail test.
//!
//! Usage: `cargo run --release -p hsm-tests --bin hsm-bench -- [--tasks N] [--out FILE]`
//! (`--compare-agent PATH` adds the agent path through a second agent binary, alternating.)

use anyhow::{bail, Context};
use clap_free_args::Args;
use hsm_tests::{agent_config, hsm_sweep, start_agent};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Minimal flag parsing: the bench has three flags and no need for clap's derive here.
mod clap_free_args {
    pub struct Args {
        pub tasks: u64,
        pub slots: u64,
        pub out: std::path::PathBuf,
        /// Where the hsm sweep writes its outputs (default: a new directory under target/bench).
        pub dir: Option<std::path::PathBuf>,
        /// The agent binary (default: `hsm-agent` beside this bench).
        pub agent: Option<std::path::PathBuf>,
        /// A second agent binary (e.g. the portable dist build) measured against `agent`.
        pub compare_agent: Option<std::path::PathBuf>,
    }

    impl Args {
        pub fn parse() -> anyhow::Result<Args> {
            let mut args = Args {
                tasks: 10_000,
                slots: 2,
                out: "target/bench/local-dispatch.md".into(),
                dir: None,
                agent: None,
                compare_agent: None,
            };
            let mut it = std::env::args().skip(1);
            while let Some(flag) = it.next() {
                let mut value = || {
                    it.next()
                        .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
                };
                match flag.as_str() {
                    "--tasks" => args.tasks = value()?.parse()?,
                    "--slots" => args.slots = value()?.parse()?,
                    "--out" => args.out = value()?.into(),
                    "--dir" => args.dir = Some(value()?.into()),
                    "--agent" => args.agent = Some(value()?.into()),
                    "--compare-agent" => args.compare_agent = Some(value()?.into()),
                    "-h" | "--help" => {
                        println!("hsm-bench [--tasks N] [--slots K] [--out FILE] [--dir DIR] [--agent PATH] [--compare-agent PATH]");
                        std::process::exit(0);
                    }
                    other => anyhow::bail!("unknown flag {other}"),
                }
            }
            Ok(args)
        }
    }
}

struct Measurement {
    name: &'static str,
    elapsed: Duration,
    tasks: u64,
}

impl Measurement {
    fn rate(&self) -> f64 {
        self.tasks as f64 / self.elapsed.as_secs_f64()
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let true_bin = "/bin/true";
    if !std::path::Path::new(true_bin).exists() {
        bail!("{true_bin} not found");
    }
    eprintln!(
        "hsm-bench: {} tasks of {true_bin}, {} in flight",
        args.tasks, args.slots
    );

    let spawn_loop = measure(
        "plain spawn loop (Rust std, posix_spawn)",
        args.tasks,
        || spawn_loop(true_bin, args.tasks, args.slots),
    )?;
    let xargs = measure("xargs -P", args.tasks, || {
        xargs(true_bin, args.tasks, args.slots)
    })?;
    // Nothing is deleted until every measurement is done: ext4 skips inodes deleted in the
    // last 60-300 s when allocating, which would slow whatever runs next.
    let work_root = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::path::PathBuf::from("target/bench/work"),
    };
    std::fs::create_dir_all(&work_root)?;
    let disk_dir = tempfile::tempdir_in(&work_root)?;
    let local = measure(
        "hsm local source (sweep run, end to end)",
        args.tasks,
        || hsm_local(disk_dir.path(), true_bin, args.tasks, args.slots),
    )?;
    let disk_fs = filesystem_of(disk_dir.path());
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs_dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).ok()
    } else {
        None
    };
    let local_tmpfs = match &tmpfs_dir {
        Some(dir) => Some(measure("hsm local source on tmpfs", args.tasks, || {
            hsm_local(dir.path(), true_bin, args.tasks, args.slots)
        })?),
        None => None,
    };

    // CPU of the coordinator itself per task on the local path (children excluded).
    let cpu_dir = tempfile::tempdir_in(&work_root)?;
    let cpu_before = own_cpu();
    hsm_local(cpu_dir.path(), true_bin, args.tasks, args.slots)?;
    let local_cpu = (own_cpu() - cpu_before) / args.tasks as u32;

    // The agent path: the same tasks through one hsm-agent on loopback.
    let agent_bin = match &args.agent {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("hsm-agent"),
    };
    if let Some(other) = &args.compare_agent {
        if !other.is_file() || !agent_bin.is_file() {
            bail!(
                "--compare-agent needs both {} and {}",
                agent_bin.display(),
                other.display()
            );
        }
    }
    let mut compared = Vec::new();
    let home = tempfile::tempdir_in(&work_root)?;
    // SAFETY (edition 2021: safe): set before any thread reads the environment for identity.
    std::env::set_var("HSM_HOME", home.path());
    let mut agent_rows = None;
    if agent_bin.is_file() {
        let agent = start_agent(&agent_bin, args.slots, &work_root, &[], &[])?;
        let project = tempfile::tempdir_in(&work_root)?;
        let config = agent_config(
            &agent,
            &format!("[\"{true_bin}\", \"{{overrides}}\"]"),
            project.path(),
        );
        let cpu_before = own_cpu();
        let m = measure("hsm through one agent on loopback", args.tasks, || {
            hsm_sweep(project.path(), &config, args.tasks, &["--sources", "a1"])
        })?;
        let agent_cpu = (own_cpu() - cpu_before) / args.tasks as u32;
        // The same through an agent that keeps no ledger on disk: what durability costs.
        let volatile = start_agent(&agent_bin, args.slots, &work_root, &["--no-ledger"], &[])?;
        let volatile_project = tempfile::tempdir_in(&work_root)?;
        let volatile_config = agent_config(
            &volatile,
            &format!("[\"{true_bin}\", \"{{overrides}}\"]"),
            volatile_project.path(),
        );
        let m_volatile = measure(
            "hsm through one agent without its disk ledger (--no-ledger)",
            args.tasks,
            || {
                hsm_sweep(
                    volatile_project.path(),
                    &volatile_config,
                    args.tasks,
                    &["--sources", "a1"],
                )
            },
        )?;
        drop(volatile);

        // Two agent binaries, alternating (other, this, this, other) so that drift in the
        // machine's speed over the run affects both alike.
        if let Some(other) = &args.compare_agent {
            for (i, bin) in [other, &agent_bin, &agent_bin, other]
                .into_iter()
                .enumerate()
            {
                let a = start_agent(bin, args.slots, &work_root, &[], &[])?;
                let dir = tempfile::tempdir_in(&work_root)?;
                let config = agent_config(
                    &a,
                    &format!("[\"{true_bin}\", \"{{overrides}}\"]"),
                    dir.path(),
                );
                let m = measure("hsm through one agent (comparison)", args.tasks, || {
                    hsm_sweep(dir.path(), &config, args.tasks, &["--sources", "a1"])
                })?;
                eprintln!("hsm-bench:   run {} was {}", i + 1, bin.display());
                compared.push((bin.clone(), m));
            }
        }

        // 1 GiB of results back over QUIC, beside `cat | cat` of the same amount.
        let gib: u64 = 1 << 30;
        let big = tempfile::tempdir_in(&work_root)?;
        let writer = format!(
            "[\"/bin/sh\", \"-c\", \"head -c {gib} /dev/zero > \\\"$HSM_OUTPUT_DIR/big.bin\\\"\", \"{{overrides}}\"]"
        );
        let started = Instant::now();
        hsm_sweep(
            big.path(),
            &agent_config(&agent, &writer, big.path()),
            1,
            &["--sources", "a1"],
        )?;
        let hsm_transfer = started.elapsed();
        let local_file = big.path().join("local.bin");
        let started = Instant::now();
        let status = Command::new("sh")
            .args([
                "-c",
                &format!("head -c {gib} /dev/zero > {}", local_file.display()),
            ])
            .status()?;
        let write_only = started.elapsed();
        let started = Instant::now();
        let status2 = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "cat {} | cat > {}.copy",
                    local_file.display(),
                    local_file.display()
                ),
            ])
            .status()?;
        let cat_pipe = started.elapsed();
        if !status.success() || !status2.success() {
            bail!("baseline shell commands failed");
        }
        let relay = relay_rows(&agent, &agent_bin, &work_root, true_bin, args.tasks, &m)?;
        agent_rows = Some((
            m,
            m_volatile,
            agent_cpu,
            hsm_transfer,
            write_only,
            cat_pipe,
            relay,
        ));
    } else {
        eprintln!(
            "hsm-bench: {} not built; skipping the agent rows (cargo build --release -p hsm-agent)",
            agent_bin.display()
        );
    }

    let mut report = String::new();
    report.push_str("# Local dispatch benchmark\n\n");
    report.push_str(&format!(
        "{} tasks of `{true_bin}`, {} in flight, on {} CPU(s). Measured in one run by `hsm-bench`.\n\n",
        args.tasks,
        args.slots,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    ));
    report.push_str("| runner | seconds | tasks/s |\n|---|---:|---:|\n");
    let mut rows = vec![&spawn_loop, &xargs, &local];
    rows.extend(local_tmpfs.as_ref());
    for m in rows {
        report.push_str(&format!(
            "| {} | {:.2} | {:.0} |\n",
            m.name,
            m.elapsed.as_secs_f64(),
            m.rate()
        ));
    }
    report.push_str(&format!(
        "\nhsm local / xargs: **{:.2}x** (aim: 0.8x or better)  \nhsm local / spawn loop: {:.2}x\n",
        local.rate() / xargs.rate(),
        local.rate() / spawn_loop.rate()
    ));
    if let Some(m) = &local_tmpfs {
        report.push_str(&format!(
            "hsm local on tmpfs / xargs: {:.2}x\n",
            m.rate() / xargs.rate()
        ));
    }
    report.push_str(&format!(
        "\nCoordinator CPU per task (user + system, children excluded), local source: {:.0} µs\n",
        local_cpu.as_secs_f64() * 1e6
    ));
    if !compared.is_empty() {
        report.push_str(&format!(
            "\n## Two agent binaries, alternating ({} slots)\n\n| run | agent binary | bytes | seconds | tasks/s |\n|---|---|---:|---:|---:|\n",
            args.slots
        ));
        for (i, (bin, m)) in compared.iter().enumerate() {
            let bytes = std::fs::metadata(bin).map(|md| md.len()).unwrap_or(0);
            report.push_str(&format!(
                "| {} | `{}` | {bytes} | {:.2} | {:.0} |\n",
                i + 1,
                bin.display(),
                m.elapsed.as_secs_f64(),
                m.rate()
            ));
        }
    }
    if let Some((m, m_volatile, agent_cpu, hsm_transfer, write_only, cat_pipe, relay)) = &agent_rows
    {
        report.push_str(&format!(
            "\n## Through one agent on loopback ({} slots)\n\n| runner | seconds | tasks/s |\n|---|---:|---:|\n| {} | {:.2} | {:.0} |\n| {} | {:.2} | {:.0} |\n\n\
             hsm agent / hsm local: **{:.2}x** (aim: 0.9x or better)  \nhsm agent / xargs: {:.2}x  \n\
             with the ledger / without: {:.2}x  \n\
             Coordinator CPU per task through the agent: **{:.0} µs** (aim: under 30 µs)\n",
            args.slots,
            m.name,
            m.elapsed.as_secs_f64(),
            m.rate(),
            m_volatile.name,
            m_volatile.elapsed.as_secs_f64(),
            m_volatile.rate(),
            m.rate() / local.rate(),
            m.rate() / xargs.rate(),
            m.rate() / m_volatile.rate(),
            agent_cpu.as_secs_f64() * 1e6
        ));
        let mib = 1024.0;
        let transfer = hsm_transfer.saturating_sub(*write_only);
        report.push_str(&format!(
            "\n## 1 GiB of result files over loopback\n\n| what | seconds | MiB/s |\n|---|---:|---:|\n\
             | task writes 1 GiB + hsm brings it back (whole sweep) | {:.2} | |\n\
             | writing 1 GiB locally (`head -c`) | {:.2} | {:.0} |\n\
             | hsm transfer (difference of the two) | {:.2} | {:.0} |\n\
             | `cat file \\| cat > copy` | {:.2} | {:.0} |\n",
            hsm_transfer.as_secs_f64(),
            write_only.as_secs_f64(),
            mib / write_only.as_secs_f64(),
            transfer.as_secs_f64(),
            mib / transfer.as_secs_f64().max(1e-9),
            cat_pipe.as_secs_f64(),
            mib / cat_pipe.as_secs_f64()
        ));
        report.push_str(&relay.report(args.slots));
    }
    report.push_str(&format!(
        "\nSweep outputs were written to `{}` ({disk_fs}). Each task creates 7 inodes (task and \
         results directories, params.yaml, command.txt, stdout.log, stderr.log, status.yaml); \
         xargs creates none. On ext4, creating inodes slows down for a few minutes after many \
         files were deleted (the allocator skips recently deleted inodes), so run the bench on a \
         quiet filesystem; the tmpfs row shows hsm's own overhead without the filesystem.\n",
        work_root.display()
    ));
    report.push_str(
        "\nThe hsm figure is the whole `sweep run`: expanding the sweep, creating sweep.db with every \
         task, a task directory with params.yaml, command.txt, status.yaml and logs per task, \
         and every status change written to SQLite.\n",
    );
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.out, &report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    print!("{report}");
    eprintln!("hsm-bench: results written to {}", args.out.display());
    Ok(())
}

fn measure(
    name: &'static str,
    tasks: u64,
    f: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<Measurement> {
    eprintln!("hsm-bench: {name} ...");
    let started = Instant::now();
    f().with_context(|| name.to_string())?;
    let m = Measurement {
        name,
        elapsed: started.elapsed(),
        tasks,
    };
    eprintln!("hsm-bench: {name}: {:.0} tasks/s", m.rate());
    Ok(m)
}

/// Keeps `slots` children running, waiting for any with `waitpid(-1)`.
fn spawn_loop(program: &str, tasks: u64, slots: u64) -> anyhow::Result<()> {
    let mut running = 0;
    let mut started = 0;
    let mut finished = 0;
    while finished < tasks {
        while running < slots && started < tasks {
            let child = Command::new(program)
                .arg(started.to_string())
                .stdin(Stdio::null())
                .spawn()?;
            // Reaped below by waitpid(-1); the handle is not needed.
            std::mem::forget(child);
            running += 1;
            started += 1;
        }
        let mut status = 0;
        // SAFETY: waits for any child of this process; all were started above.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            bail!("waitpid failed: {}", std::io::Error::last_os_error());
        }
        running -= 1;
        finished += 1;
    }
    Ok(())
}

fn xargs(program: &str, tasks: u64, slots: u64) -> anyhow::Result<()> {
    let mut child = Command::new("xargs")
        .args(["-P", &slots.to_string(), "-n", "1", program])
        .stdin(Stdio::piped())
        .spawn()
        .context("starting xargs")?;
    {
        let mut stdin = child.stdin.take().expect("piped stdin");
        let mut input = String::with_capacity(tasks as usize * 6);
        for i in 0..tasks {
            input.push_str(&i.to_string());
            input.push('\n');
        }
        stdin.write_all(input.as_bytes())?;
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("xargs exited with {status}");
    }
    Ok(())
}

/// A real `sweep run` in-process (the same code path as the binary) on a throwaway project.
fn hsm_local(
    project: &std::path::Path,
    program: &str,
    tasks: u64,
    slots: u64,
) -> anyhow::Result<()> {
    let config = format!("command:\n  template: [\"{program}\", \"{{overrides}}\"]\n");
    hsm_sweep(project, &config, tasks, &["--parallel", &slots.to_string()])
}

/// CPU time (user + system) this process has used so far: the coordinator's own threads, not
/// its children.
fn own_cpu() -> Duration {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The filesystem type of `path`, for the report.
fn filesystem_of(path: &std::path::Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return "unknown filesystem".into();
    };
    // SAFETY: statfs fills the zeroed struct we own from a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return "unknown filesystem".into();
    }
    match stat.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x01021994 => "tmpfs".into(),
        0x9123683E => "btrfs".into(),
        0x58465342 => "xfs".into(),
        0x794c7630 => "overlayfs".into(),
        other => format!("filesystem type {other:#x}"),
    }
}

/// The agent path over the ssh transport's pipe, with `hsm-agent relay` run locally instead of
/// through ssh (`HSM_SSH` names a stand-in that runs the remote command here), beside the same
/// agent over UDP: what carrying QUIC over a pipe costs, without ssh's encryption.
struct RelayRows {
    tasks: Measurement,
    /// The UDP agent row of the same run.
    udp_rate: f64,
    /// 100 MiB of results back: over UDP, over the relay, and writing it locally.
    udp_transfer: Duration,
    relay_transfer: Duration,
    write_only: Duration,
}

const RELAY_MIB: u64 = 100;

fn relay_rows(
    agent: &hsm_tests::BenchAgent,
    agent_bin: &std::path::Path,
    work_root: &std::path::Path,
    true_bin: &str,
    tasks: u64,
    udp: &Measurement,
) -> anyhow::Result<RelayRows> {
    use std::os::unix::fs::PermissionsExt;
    // `HSM_SSH` set by the caller (e.g. a wrapper running a real `ssh` to an sshd on loopback
    // for the host alias `bench-relay`) is used as it is; otherwise the stand-in below.
    let own_ssh = std::env::var_os(hsm_coordinator::transport::SSH_PROGRAM_ENV).is_some();
    if !own_ssh {
        let fake = work_root.join("bench-fake-ssh");
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nPATH='{}':\"$PATH\"; export PATH\nfor last; do :; done\nexec sh -c \"$last\"\n",
                agent_bin.parent().unwrap_or(work_root).display()
            ),
        )?;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
        // SAFETY (edition 2021: safe): read when the relay starts, on threads started later.
        std::env::set_var(hsm_coordinator::transport::SSH_PROGRAM_ENV, &fake);
    }
    let via_relay = |config: String| format!("{config}    transport: ssh\n    ssh: bench-relay\n");
    let project = tempfile::tempdir_in(work_root)?;
    let config = via_relay(agent_config(
        agent,
        &format!("[\"{true_bin}\", \"{{overrides}}\"]"),
        project.path(),
    ));
    let m = measure(
        if own_ssh {
            "hsm through one agent over the relay, through $HSM_SSH (transport: ssh)"
        } else {
            "hsm through one agent over a local relay pipe (transport: ssh, no ssh)"
        },
        tasks,
        || hsm_sweep(project.path(), &config, tasks, &["--sources", "a1"]),
    )?;
    let bytes = RELAY_MIB << 20;
    let writer = format!(
        "[\"/bin/sh\", \"-c\", \"head -c {bytes} /dev/zero > \\\"$HSM_OUTPUT_DIR/big.bin\\\"\", \"{{overrides}}\"]"
    );
    let timed = |relay: bool| -> anyhow::Result<Duration> {
        let dir = tempfile::tempdir_in(work_root)?;
        let mut config = agent_config(agent, &writer, dir.path());
        if relay {
            config = via_relay(config);
        }
        let started = Instant::now();
        hsm_sweep(dir.path(), &config, 1, &["--sources", "a1"])?;
        Ok(started.elapsed())
    };
    let udp_transfer = timed(false)?;
    let relay_transfer = timed(true)?;
    let local = tempfile::tempdir_in(work_root)?;
    let started = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "head -c {bytes} /dev/zero > {}",
                local.path().join("w.bin").display()
            ),
        ])
        .status()?;
    if !status.success() {
        bail!("head -c failed");
    }
    Ok(RelayRows {
        tasks: m,
        udp_rate: udp.rate(),
        udp_transfer,
        relay_transfer,
        write_only: started.elapsed(),
    })
}

impl RelayRows {
    fn report(&self, slots: u64) -> String {
        let mib = RELAY_MIB as f64;
        let rate = |whole: Duration| {
            mib / whole
                .saturating_sub(self.write_only)
                .as_secs_f64()
                .max(1e-9)
        };
        format!(
            "\n## Through one agent over the relay pipe (transport: ssh, `hsm-agent relay`)\n\n\
             | runner | seconds | tasks/s |\n|---|---:|---:|\n| {} | {:.2} | {:.0} |\n\n\
             relay / UDP ({slots} slots): **{:.2}x** (aim: 0.7x or better)\n\n\
             | {RELAY_MIB} MiB of results back (whole sweep, minus writing it locally: {:.2} s) | seconds | MiB/s |\n|---|---:|---:|\n\
             | over UDP | {:.2} | {:.0} |\n| over the relay pipe | {:.2} | **{:.0}** (aim: 50 or more) |\n",
            self.tasks.name,
            self.tasks.elapsed.as_secs_f64(),
            self.tasks.rate(),
            self.tasks.rate() / self.udp_rate,
            self.write_only.as_secs_f64(),
            self.udp_transfer.as_secs_f64(),
            rate(self.udp_transfer),
            self.relay_transfer.as_secs_f64(),
            rate(self.relay_transfer),
        )
    }
}
