//! Typed HPC resources of a job (walltime, cpus, memory, GPUs, queue placement, environment set-up)
//! as written in the project config, and their conversion to each scheduler's units.
//!
//! The struct is the *raw* layer (serde, as written): memory stays a string so that what the user
//! wrote is what `config show` prints; [`Memory::parse`] validates and converts it when a script
//! is built.

/// What a job asks for: the wire type, shared with the coordinator (see
/// [`hsm_protocol::HpcResources`]).
pub use hsm_protocol::HpcResources as Resources;

/// A memory amount, held in kibibytes so every unit the user may write converts exactly
/// (`1.5T` is a whole number of KiB; a fractional KiB is rounded up).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Memory {
    /// The amount in KiB.
    pub kib: u64,
}

/// A memory string that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid memory amount {input:?}: {why} (write e.g. 16G, 4000M, 64gb, 1.5T)")]
pub struct MemoryError {
    /// What the user wrote.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl Memory {
    /// Parses `16G`, `16GB`, `16gb`, `4000M`, `512K`, `1.5T`, or a bare number (megabytes, as
    /// Slurm reads it). Units are binary (1G = 1024M) as in both Slurm and PBS.
    pub fn parse(text: &str) -> Result<Memory, MemoryError> {
        let err = |why| MemoryError {
            input: text.to_string(),
            why,
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        if number.is_empty() {
            return Err(err("no number"));
        }
        let unit_kib: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "m" | "mb" | "mib" => 1024,
            "k" | "kb" | "kib" => 1,
            "g" | "gb" | "gib" => 1024 * 1024,
            "t" | "tb" | "tib" => 1024 * 1024 * 1024,
            _ => return Err(err("unknown unit")),
        };
        // Exact decimal arithmetic: integer part and up to 9 fraction digits, no floats.
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err("no number"));
        }
        if frac_part.contains('.') || frac_part.len() > 9 {
            return Err(err("malformed number"));
        }
        let int_value: u64 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err("number too large"))?
        };
        let frac_value: u64 = if frac_part.is_empty() {
            0
        } else {
            frac_part.parse().map_err(|_| err("malformed number"))?
        };
        let scale = 10u64.pow(frac_part.len() as u32);
        let whole = int_value
            .checked_mul(unit_kib)
            .ok_or_else(|| err("number too large"))?;
        let frac = (frac_value as u128 * unit_kib as u128).div_ceil(scale as u128) as u64;
        let kib = whole
            .checked_add(frac)
            .ok_or_else(|| err("number too large"))?;
        if kib == 0 {
            return Err(err("must be more than zero"));
        }
        Ok(Memory { kib })
    }

    /// Slurm's `--mem` value: whole gigabytes as `NG`, else whole megabytes as `NM` (rounded up,
    /// since Slurm takes only integers and asking for less than written could kill the task).
    pub fn slurm(&self) -> String {
        const GIB: u64 = 1024 * 1024;
        if self.kib.is_multiple_of(GIB) {
            format!("{}G", self.kib / GIB)
        } else {
            format!("{}M", self.kib.div_ceil(1024))
        }
    }

    /// PBS's `mem=` value: `Ngb` when whole gigabytes, else `Nmb` (rounded up). PBS Pro and
    /// Torque both read these suffixes case-insensitively.
    pub fn pbs(&self) -> String {
        const GIB: u64 = 1024 * 1024;
        if self.kib.is_multiple_of(GIB) {
            format!("{}gb", self.kib / GIB)
        } else {
            format!("{}mb", self.kib.div_ceil(1024))
        }
    }

    /// Grid Engine's memory value (`h_vmem=`): `NG` when whole gibibytes, else `NM` (rounded
    /// up); Grid Engine reads `K`/`M`/`G` as powers of 1024.
    pub fn sge(&self) -> String {
        const GIB: u64 = 1024 * 1024;
        if self.kib.is_multiple_of(GIB) {
            format!("{}G", self.kib / GIB)
        } else {
            format!("{}M", self.kib.div_ceil(1024))
        }
    }
}

/// Formats a walltime for Slurm: `HH:MM:SS`, or `D-HH:MM:SS` from one day on.
pub fn slurm_walltime(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let hms = format!(
        "{:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    );
    if days > 0 {
        format!("{days}-{hms}")
    } else {
        hms
    }
}

/// Formats a walltime for PBS: `HH:MM:SS` with hours past 24 (PBS has no day field).
pub fn pbs_walltime(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds % 3600 / 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units_convert_to_each_scheduler() {
        let cases = [
            ("16G", "16G", "16gb"),
            ("16GB", "16G", "16gb"),
            ("64gb", "64G", "64gb"),
            ("4000M", "4000M", "4000mb"),
            ("4096M", "4G", "4gb"),
            ("4000", "4000M", "4000mb"),
            ("1.5T", "1536G", "1536gb"),
            ("1.5G", "1536M", "1536mb"),
            ("0.1G", "103M", "103mb"),
            ("512K", "1M", "1mb"),
            (" 2g ", "2G", "2gb"),
        ];
        for (input, slurm, pbs) in cases {
            let mem = Memory::parse(input).unwrap();
            assert_eq!(mem.slurm(), slurm, "{input}");
            assert_eq!(mem.pbs(), pbs, "{input}");
        }
    }

    #[test]
    fn bad_memory_is_an_error_naming_the_input() {
        for input in [
            "",
            "G",
            "16X",
            "1.2.3G",
            "-1G",
            "0G",
            "0",
            ".",
            "99999999999999999999G",
        ] {
            let err = Memory::parse(input).unwrap_err();
            assert_eq!(err.input, input);
            assert!(err.to_string().contains("16G"), "{err}");
        }
    }

    #[test]
    fn walltime_formats() {
        assert_eq!(slurm_walltime(59), "00:00:59");
        assert_eq!(slurm_walltime(3600 + 61), "01:01:01");
        assert_eq!(slurm_walltime(86_399), "23:59:59");
        assert_eq!(slurm_walltime(86_400), "1-00:00:00");
        assert_eq!(slurm_walltime(2 * 86_400 + 3661), "2-01:01:01");
        assert_eq!(pbs_walltime(2 * 86_400 + 3661), "49:01:01");
        assert_eq!(pbs_walltime(0), "00:00:00");
    }

    #[test]
    fn resources_default_to_arrays_and_roundtrip_through_serde() {
        let res = Resources::default();
        assert!(res.array);
        let json = r#"{"walltime": 3600, "mem": "16G", "modules": ["cuda/12"], "array": false}"#;
        let parsed: Resources = serde_json::from_str(json).unwrap();
        assert_eq!(parsed.walltime, Some(3600));
        assert_eq!(parsed.mem.as_deref(), Some("16G"));
        assert!(!parsed.array);
        let back: Resources =
            serde_json::from_str(&serde_json::to_string(&parsed).unwrap()).unwrap();
        assert_eq!(back, parsed);
        // A wire type: a field a newer coordinator adds is ignored, not an error (the config
        // file, where a typo matters, is checked key by key by the coordinator).
        let newer: Resources = serde_json::from_str(r#"{"walltime": 1, "licenses": "x"}"#).unwrap();
        assert_eq!(newer.walltime, Some(1));
    }
}
