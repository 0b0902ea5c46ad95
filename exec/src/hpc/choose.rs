//! Which batch scheduler a source's `backend:` means on this host, from what `sbatch --version`
//! and `qstat --version` answered; or why the host cannot serve it, in words that say what to
//! change. Pure: the scheduler backend (before it submits) and the agent's pre-flight check run
//! the two commands and hand their answers in.

use super::parse;
use super::script::Scheduler;
use super::sge;
use hsm_protocol::SchedulerChoice;

/// What the two version commands answered on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// `sbatch --version`: its stdout when it worked; otherwise why not (its stderr, or why it
    /// could not be run).
    pub sbatch: Result<String, String>,
    /// `qstat --version`: its stdout and stderr together when it ran, whatever its exit status
    /// (Slurm's wrappers and some Torque builds answer with a usage text); otherwise why it
    /// could not be run.
    pub qstat: Result<String, String>,
}

/// The scheduler `choice` is on the host `probe` describes, or why it cannot be used there.
pub fn choose(choice: SchedulerChoice, probe: &Probe) -> Result<Scheduler, String> {
    let sbatch_text = probe.sbatch.as_deref().ok();
    let qstat_text = probe.qstat.as_deref().ok();
    let found = parse::detect(sbatch_text, qstat_text);
    // Whether the `qstat` here is Grid Engine's, whatever else the host has.
    let grid_engine = qstat_text.is_some_and(sge::is_grid_engine);
    let qstat_failure = || match &probe.qstat {
        Ok(text) => first_line(text),
        Err(why) => why.clone(),
    };
    match choice {
        SchedulerChoice::Slurm => match &probe.sbatch {
            Ok(_) => Ok(Scheduler::Slurm),
            Err(why) => Err(format!(
                "backend slurm: `sbatch --version` does not work on this host ({why})"
            )),
        },
        SchedulerChoice::Pbs => match found {
            // Grid Engine's qsub takes other options: nothing is submitted through it (a host
            // with Slurm too has its own `qsub` answering here: Slurm does not win).
            _ if grid_engine => Err(format!(
                "backend pbs: the `qsub`/`qstat` on this host are Grid Engine's ({}), not PBS's: \
                 use `backend: sge` for this source, or put PBS's commands first on the agent's \
                 PATH",
                qstat_failure()
            )),
            Some(s @ (Scheduler::PbsPro | Scheduler::Torque)) => Ok(s),
            // Slurm's qsub wrappers (and some Torque builds) do not answer --version: their
            // `qsub -t` arrays are Torque-style.
            _ if probe.qstat.is_ok() => Ok(Scheduler::Torque),
            _ => Err(format!(
                "backend pbs: `qstat` is not available on this host ({})",
                qstat_failure()
            )),
        },
        SchedulerChoice::Sge if grid_engine => match qstat_text.and_then(sge::unusable) {
            None => Ok(Scheduler::Sge),
            Some(why) => Err(format!(
                "backend sge: Grid Engine's `qstat` cannot reach its cluster ({why}): start the \
                 agent in the environment Grid Engine needs (SGE_ROOT, SGE_CELL; e.g. \
                 `. $SGE_ROOT/default/common/settings.sh`)"
            )),
        },
        SchedulerChoice::Sge => Err(format!(
            "backend sge: `qstat --version` does not answer as Grid Engine's on this host ({})",
            qstat_failure()
        )),
        SchedulerChoice::Auto => match found {
            Some(Scheduler::Sge) => match qstat_text.and_then(sge::unusable) {
                None => Ok(Scheduler::Sge),
                Some(why) => Err(format!(
                    "backend auto: only Grid Engine's `qstat` is here, and it cannot reach its \
                     cluster ({why})"
                )),
            },
            Some(s) => Ok(s),
            None if probe.qstat.is_ok() => Ok(Scheduler::Torque),
            None => Err("backend auto: neither `sbatch` nor `qstat` works on this host".into()),
        },
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("no output")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLURM: &str = "slurm 22.05.8\n";
    const SGE: &str = "SGE 8.1.9\nusage: qstat [options]\n";
    const SGE_LOST: &str = "error: unable to read qmaster name: can't open \"/x/act_qmaster\"\n";
    const PBS_PRO: &str = "pbs_version = 19.1.3\n";
    const SLURM_WRAPPER: &str = "Unknown option: version\nusage: qstat [-f] ...\n";

    fn probe(sbatch: Option<&str>, qstat: Option<&str>) -> Probe {
        Probe {
            sbatch: sbatch
                .map(str::to_string)
                .ok_or_else(|| "cannot run `sbatch`: No such file or directory".into()),
            qstat: qstat
                .map(str::to_string)
                .ok_or_else(|| "cannot run `qstat`: No such file or directory".into()),
        }
    }

    #[test]
    fn each_backend_is_found_where_its_commands_answer() {
        use SchedulerChoice::*;
        for (choice, host, want) in [
            (
                Slurm,
                probe(Some(SLURM), Some(SLURM_WRAPPER)),
                Scheduler::Slurm,
            ),
            (Pbs, probe(None, Some(PBS_PRO)), Scheduler::PbsPro),
            (
                Pbs,
                probe(None, Some("Version: 6.1.2\n")),
                Scheduler::Torque,
            ),
            // Slurm's own qsub/qstat wrappers: Torque-style arrays.
            (
                Pbs,
                probe(Some(SLURM), Some(SLURM_WRAPPER)),
                Scheduler::Torque,
            ),
            (Sge, probe(None, Some(SGE)), Scheduler::Sge),
            (Auto, probe(Some(SLURM), Some(SGE)), Scheduler::Slurm),
            (Auto, probe(None, Some(SGE)), Scheduler::Sge),
            (Auto, probe(None, Some(PBS_PRO)), Scheduler::PbsPro),
            (Auto, probe(None, Some(SLURM_WRAPPER)), Scheduler::Torque),
        ] {
            assert_eq!(choose(choice, &host), Ok(want), "{choice:?} on {host:?}");
        }
    }

    #[test]
    fn a_host_that_cannot_serve_the_backend_says_what_to_change() {
        use SchedulerChoice::*;
        let no = |choice, host: Probe| choose(choice, &host).unwrap_err();
        let why = no(Slurm, probe(None, Some(PBS_PRO)));
        assert!(
            why.starts_with(
                "backend slurm: `sbatch --version` does not work on this host (cannot run"
            ),
            "{why}"
        );
        // Grid Engine's qsub next to Slurm's wrappers: never PBS.
        let why = no(Pbs, probe(Some(SLURM), Some(SGE)));
        assert!(
            why.contains("are Grid Engine's (SGE 8.1.9), not PBS's: use `backend: sge`"),
            "{why}"
        );
        let why = no(Pbs, probe(None, None));
        assert!(why.contains("`qstat` is not available"), "{why}");
        let why = no(Sge, probe(None, Some(PBS_PRO)));
        assert!(
            why.contains("does not answer as Grid Engine's on this host (pbs_version = 19.1.3)"),
            "{why}"
        );
        let why = no(Sge, probe(None, Some(SGE_LOST)));
        assert!(why.contains("cannot reach its cluster"), "{why}");
        assert!(why.contains("SGE_ROOT"), "{why}");
        assert!(no(Auto, probe(None, Some(SGE_LOST))).contains("only Grid Engine's"));
        assert!(no(Auto, probe(None, None)).contains("neither `sbatch` nor `qstat`"));
    }
}
