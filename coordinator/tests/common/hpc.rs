//! An `hsm-agent` on this host in front of a real batch scheduler (Slurm, its PBS wrappers, Grid
//! Engine) and a project whose one source is that agent: what the cluster tests share.

use super::*;

pub struct HpcCluster {
    pub project: Project,
    pub home: tempfile::TempDir,
    pub agent: AgentProcess,
}

impl HpcCluster {
    /// An agent with `backend` (its environment extended by `env`), the project's source `source`
    /// holding up to 100 tasks, running `task.py` = `task_py` over `sweeps/sweep.yaml` = `sweep`;
    /// `extra_config` goes into `.hsm/config.yaml` before `sources:`.
    pub fn new(
        agent_bin: &Path,
        source: &str,
        backend: &str,
        task_py: &str,
        sweep: &str,
        extra_config: &str,
        env: &[(String, String)],
    ) -> HpcCluster {
        let home = tempfile::tempdir().unwrap();
        let project = Project::new(
            "command:\n  python: python3\n  script: task.py\n",
            &[("task.py", task_py), ("sweeps/sweep.yaml", sweep)],
        );
        let agent = start_agent_with_env(agent_bin, None, "127.0.0.1:0", &["--poll", "1"], env);
        let own_fp = coordinator_fingerprint(&project, home.path());
        authorize(agent_bin, &agent, &own_fp);
        let config = format!(
            "command:\n  python: python3\n  script: task.py\ndefaults:\n  kill_grace: 2s\n{extra_config}sources:\n  {source}:\n    type: agent\n    address: {}\n    fingerprint: {}\n    project_dir: {}\n    slots: 100\n    backend: {backend}\n",
            agent.addr,
            agent.fingerprint,
            project.path().display()
        );
        project.write(".hsm/config.yaml", &config);
        HpcCluster {
            project,
            home,
            agent,
        }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = self.project.command(args);
        cmd.env("HSM_HOME", self.home.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::wait(self.command(args).spawn().unwrap(), args.join(" "))
    }

    /// Job scripts the agent submitted for `sweep` (one directory per job).
    pub fn jobs(&self, sweep: &str) -> Vec<PathBuf> {
        let dir = self
            .agent
            .work_dir()
            .join(sweep)
            .join("scripts/job_scripts");
        let mut jobs: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        jobs.sort();
        jobs
    }
}

/// The lines of the file `runs` (tasks append their `x` there, one line per run), sorted.
pub fn runs_sorted(runs: &Path) -> Vec<String> {
    let mut ran: Vec<String> = std::fs::read_to_string(runs)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    ran.sort();
    ran
}
