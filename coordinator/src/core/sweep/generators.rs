//! Value generators (`range`, `linspace`, `logspace`) and the random block's distributions with
//! the seeded SplitMix64 they draw from (Python HSM-compatible sequences).

use super::*;

#[derive(Debug, Clone, Copy)]
pub(super) enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    pub(super) fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    pub(super) fn text(self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Float(f) => float_text(f),
        }
    }
}

/// Rounds to 12 significant digits so that `0.1 * 3` is `0.3`; values within 1e-12 of the
/// generator's `scale` of zero become zero (`-0.3 + 3 * 0.1` is `0.0`, not `5.55e-17`).
pub(super) fn round12(x: f64, scale: f64) -> f64 {
    if !x.is_finite() {
        return x;
    }
    if x.abs() <= scale.abs() * 1e-12 {
        return 0.0;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

pub(super) type GeneratorProblem = (String, Option<String>);

/// `range: [start, stop, step]`, half-open like Python's; ints when all three are ints.
pub(super) fn range_column(nums: &[Num]) -> Result<Column, GeneratorProblem> {
    let start = nums.first().copied().unwrap_or(Num::Int(0));
    let stop = nums.get(1).copied().unwrap_or(Num::Int(0));
    let step = nums.get(2).copied().unwrap_or(Num::Int(1));
    let written = format!(
        "[{}]",
        nums.iter().map(|n| n.text()).collect::<Vec<_>>().join(", ")
    );
    let no_values = || {
        Err((
            format!("range {written} produces no values"),
            Some("stop is excluded, and the step must lead from start towards stop".into()),
        ))
    };
    let too_many = |n: String| {
        Err((
            format!("range {written} produces {n} values, more than the limit of {MAX_VALUES}"),
            None,
        ))
    };
    if step.as_f64() == 0.0 {
        return Err((format!("range {written}: step must not be 0"), None));
    }
    if let (Num::Int(start), Num::Int(stop), Num::Int(step)) = (start, stop, step) {
        let (start, stop, step) = (i128::from(start), i128::from(stop), i128::from(step));
        let count = if step > 0 && stop > start {
            (stop - start + step - 1) / step
        } else if step < 0 && start > stop {
            (start - stop - step - 1) / -step
        } else {
            0
        };
        if count == 0 {
            return no_values();
        }
        if count > i128::from(MAX_VALUES) {
            return too_many(count.to_string());
        }
        return Ok(Column::IntRange {
            start,
            step,
            count: count as usize,
        });
    }
    let (start, stop, step) = (start.as_f64(), stop.as_f64(), step.as_f64());
    let estimate = ((stop - start) / step).ceil();
    if !estimate.is_finite() || estimate > MAX_VALUES as f64 {
        return too_many(format!("{estimate:.0}"));
    }
    let scale = start.abs().max(stop.abs()).max(step.abs());
    let value_at = |i: usize| round12(start + i as f64 * step, scale);
    let before_stop = |v: f64| if step > 0.0 { v < stop } else { v > stop };
    let mut count = if estimate > 0.0 { estimate as usize } else { 0 };
    // (stop - start) / step can land a hair above a whole number; never emit stop itself.
    while count > 0 && !before_stop(value_at(count - 1)) {
        count -= 1;
    }
    if count == 0 {
        return no_values();
    }
    Ok(Column::FloatRange {
        start,
        step,
        scale,
        count,
    })
}

/// `n` evenly spaced floats from `a` to `b`, both included.
pub(super) fn linspace(a: f64, b: f64, n: usize) -> Vec<Value> {
    let scale = a.abs().max(b.abs());
    (0..n)
        .map(|i| {
            let v = if i == 0 {
                a
            } else if i + 1 == n {
                b
            } else {
                // a*(1-t) + b*t stays finite where b - a would overflow.
                let t = i as f64 / (n - 1) as f64;
                a * (1.0 - t) + b * t
            };
            Value::Float(round12(v, scale))
        })
        .collect()
}

/// `n` floats geometrically spaced from `a` to `b`, both included (the end values themselves,
/// unlike numpy's exponents).
pub(super) fn logspace(a: f64, b: f64, n: usize) -> Vec<Value> {
    let (la, lb) = (a.log10(), b.log10());
    (0..n)
        .map(|i| {
            let v = if i == 0 {
                a
            } else if i + 1 == n {
                b
            } else {
                10f64.powf(la + (lb - la) * i as f64 / (n - 1) as f64)
            };
            Value::Float(round12(v, 0.0))
        })
        .collect()
}

#[derive(Debug, Clone)]
pub(super) enum Distribution {
    Uniform(f64, f64),
    LogUniform(f64, f64),
    Choice(Vec<Value>),
    /// Both ends included.
    RandInt(i64, i64),
}

impl Distribution {
    /// Draws one value using exactly one number from `rng`, so a sample's values never depend
    /// on which distributions came before it beyond their count.
    pub(super) fn sample(&self, rng: &mut SplitMix64) -> Value {
        match self {
            Distribution::Uniform(low, high) => {
                let u = rng.next_unit();
                // low*(1-u) + high*u cannot overflow where high - low could.
                let v = round12(low * (1.0 - u) + high * u, low.abs().max(high.abs()));
                Value::Float(v.clamp(*low, *high))
            }
            Distribution::LogUniform(low, high) => {
                let u = rng.next_unit();
                let v = round12((low.ln() * (1.0 - u) + high.ln() * u).exp(), 0.0);
                Value::Float(v.clamp(*low, *high))
            }
            Distribution::Choice(values) => {
                let index = rng.next_below(values.len() as u128);
                values
                    .get(usize::try_from(index).unwrap_or(0))
                    .cloned()
                    .unwrap_or(Value::Null)
            }
            Distribution::RandInt(low, high) => {
                let span = (i128::from(*high) - i128::from(*low) + 1) as u128;
                let offset = rng.next_below(span) as i128;
                Value::Int(i64::try_from(i128::from(*low) + offset).unwrap_or(*low))
            }
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014), kept here so that a sweep's random samples never change
/// with a dependency's version: the same file gives the same tasks forever.
#[derive(Debug, Clone)]
pub(super) struct SplitMix64 {
    pub(super) state: u64,
}

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) from the top 53 bits.
    pub(super) fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, bound) for bound in 1..=2^64 by multiply-shift (exact range, no
    /// float rounding at large bounds).
    pub(super) fn next_below(&mut self, bound: u128) -> u128 {
        (u128::from(self.next_u64()) * bound) >> 64
    }
}
