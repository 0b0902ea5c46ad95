//! HPC schedulers (Slurm, PBS Pro, Torque, Grid Engine): the pure layer — typed resources, job scripts, the
//! per-task wrapper and its records, and parsers for the schedulers' output. No IO here; the
//! backends that run `sbatch`/`squeue`/`qsub`/`qstat` feed text in and get values out.
//!
//! * [`resources`]: what a job asks for, memory and walltime in each scheduler's units.
//! * [`script`]: job scripts for arrays and single tasks, chunking, the tasks index file.
//! * [`wrapper`]: the bash wrapper each element runs, its input encoders and record parsers.
//! * [`parse`]: scheduler output parsers, the shared [`parse::JobState`], detection.
//! * [`pack`]: several short tasks per job (`hpc.tasks_per_job`) and the runner script.
//! * [`choose`]: which scheduler a source's `backend:` is on this host, or why it cannot be.
//! * [`caps`]: how many jobs may go to the scheduler now (`hpc.max_jobs`, refusals for limits).
//! * [`sge`]: Grid Engine's output (`qstat -xml`, `qacct`, `qsub -terse`) and how to tell its `qstat`.
//! * [`decide`]: what a poll concludes about one element (started, ended how), from the above.
//! * [`usage`]: what an element used, from `sacct`, `qstat -f` and the wrapper's records.

pub mod caps;
pub mod choose;
pub mod decide;
pub mod pack;
pub mod parse;
pub mod resources;
pub mod script;
pub mod sge;
pub mod usage;
pub mod wrapper;

pub use parse::{detect, FailReason, JobState};
pub use resources::{Memory, Resources};
pub use script::{ArrayJobSpec, Scheduler, SingleJobSpec};
pub use wrapper::{ExitRecord, StartRecord};
