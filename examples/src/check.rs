//! Error metrics and the per-batch report line.

use attention_layout::StepInfo;

use crate::batch::{Kind, shape};

/// Smallest denominator of the row-wise relative error, so a row whose reference is
/// (nearly) zero is judged by its absolute error instead.
pub const REL_FLOOR: f64 = 1e-3;

/// Largest errors over the compared rows.
///
/// For one row (one token and head: a `head_dim` or `headdim` vector) the relative error is
/// `max_i |got_i − want_i| / max(max_i |want_i|, REL_FLOOR)`: the infinity-norm relative
/// error, which does not blow up on an element that happens to be near zero.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Errors {
    /// Largest row-wise relative error.
    pub max_rel: f64,
    /// Largest absolute error of any element.
    pub max_abs: f64,
    /// Rows compared.
    pub rows: usize,
    /// Rows with a NaN or infinite value where the reference is finite.
    pub nonfinite: usize,
}

impl Errors {
    /// Adds one row.
    pub fn add_row(&mut self, got: &[f32], want: &[f64]) {
        self.rows += 1;
        let mut abs = 0.0f64;
        let mut scale = 0.0f64;
        let mut bad = got.len() != want.len();
        for (&g, &w) in got.iter().zip(want) {
            if !g.is_finite() {
                bad = true;
            }
            abs = abs.max((f64::from(g) - w).abs());
            scale = scale.max(w.abs());
        }
        if bad {
            self.nonfinite += 1;
            self.max_rel = f64::INFINITY;
            self.max_abs = f64::INFINITY;
            return;
        }
        self.max_abs = self.max_abs.max(abs);
        self.max_rel = self.max_rel.max(abs / scale.max(REL_FLOOR));
    }

    /// Takes the worse of two.
    pub fn merge(&mut self, o: &Self) {
        self.max_rel = self.max_rel.max(o.max_rel);
        self.max_abs = self.max_abs.max(o.max_abs);
        self.rows += o.rows;
        self.nonfinite += o.nonfinite;
    }

    /// Whether every row is finite and within `tol` (relative).
    pub fn within(&self, tol: f64) -> bool {
        self.nonfinite == 0 && self.max_rel < tol
    }
}

/// What one batch showed.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchReport {
    /// Batch number in the run.
    pub index: usize,
    /// Its seed.
    pub seed: u64,
    /// Layout label.
    pub layout: &'static str,
    /// The kind drawn.
    pub kind: Kind,
    /// The step's shapes.
    pub info: StepInfo,
    /// Paused rows.
    pub paused: usize,
    /// Output errors (attention output, or Mamba `y`).
    pub output: Errors,
    /// State errors (Mamba SSM states of the active slots; none for attention).
    pub state: Option<Errors>,
    /// Tolerance on the relative errors.
    pub tol: f64,
    /// Elements outside what the step may write that changed (KV cache outside the new
    /// tokens' slots and the dummy block; Mamba states of slots no active row owns; conv
    /// states that differ from the exact expected copy).
    pub guard_violations: usize,
    /// Output rows of padding tokens that were written.
    pub padding_writes: usize,
    /// Inconsistencies the kernels counted (an index outside its range, a chunk whose
    /// tokens belong to another sequence, ...).
    pub kernel_errors: u32,
}

impl BatchReport {
    /// Whether the batch passed.
    pub fn passed(&self) -> bool {
        self.output.within(self.tol)
            && self.state.is_none_or(|s| s.within(self.tol))
            && self.guard_violations == 0
            && self.padding_writes == 0
            && self.kernel_errors == 0
    }

    /// One line: shapes, errors, guards, verdict.
    pub fn line(&self) -> String {
        let i = &self.info;
        let state = self
            .state
            .map(|s| format!(" state_rel={:.2e}", s.max_rel))
            .unwrap_or_default();
        format!(
            "batch {:02} seed={} layout={} kind={} paused={} real={} padded={} graphed={} \
             out_rows={} max_rel={:.2e} max_abs={:.2e}{state} guard={} pad_writes={} kernel_errs={} {}",
            self.index,
            self.seed,
            self.layout,
            self.kind.as_str(),
            self.paused,
            shape(i.real),
            shape(i.padded),
            if i.graphed() { "yes" } else { "no" },
            self.output.rows,
            self.output.max_rel,
            self.output.max_abs,
            if self.guard_violations == 0 {
                "ok".to_owned()
            } else {
                format!("{}-VIOLATIONS", self.guard_violations)
            },
            self.padding_writes,
            self.kernel_errors,
            if self.passed() { "PASS" } else { "FAIL" },
        )
    }
}

/// Pass/fail counts and the worst errors of a run.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Batches that passed.
    pub passed: usize,
    /// Batches that failed.
    pub failed: usize,
    /// Graphed batches whose real shape was padded to a larger bucket.
    pub graphed_padded: usize,
    /// Eager batches.
    pub eager: usize,
    /// Worst output errors.
    pub output: Errors,
    /// Worst state errors.
    pub state: Errors,
}

impl Summary {
    /// Counts one batch.
    pub fn add(&mut self, r: &BatchReport) {
        if r.passed() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
        if r.info.graphed() && r.info.real != r.info.padded {
            self.graphed_padded += 1;
        }
        if !r.info.graphed() {
            self.eager += 1;
        }
        self.output.merge(&r.output);
        if let Some(s) = &r.state {
            self.state.merge(s);
        }
    }

    /// The closing lines; the last is `N passed, M failed`.
    pub fn lines(&self, what: &str, tol: f64) -> String {
        let state = if self.state.rows > 0 {
            format!(" worst state_rel={:.2e}", self.state.max_rel)
        } else {
            String::new()
        };
        format!(
            "{what}: worst max_rel={:.2e} max_abs={:.2e}{state} (tolerance {tol:.0e}); \
             {} graphed+padded, {} eager\n{} passed, {} failed",
            self.output.max_rel,
            self.output.max_abs,
            self.graphed_padded,
            self.eager,
            self.passed,
            self.failed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_errors() {
        let mut e = Errors::default();
        e.add_row(&[1.0, 2.004], &[1.0, 2.0]);
        assert!((e.max_rel - 0.002).abs() < 1e-6, "{e:?}");
        assert!(e.within(3e-3) && !e.within(1e-3));
        // A zero reference row is judged against the floor: 1e-7 / 1e-3 = 1e-4.
        e.add_row(&[1e-7], &[0.0]);
        assert!(e.max_rel < 2.01e-3, "{e:?}");
        let mut z = Errors::default();
        z.add_row(&[1e-7], &[0.0]);
        assert!((z.max_rel - 1e-4).abs() < 1e-9, "{z:?}");
        e.add_row(&[f32::NAN], &[0.0]);
        assert_eq!(e.nonfinite, 1);
        assert!(!e.within(1.0));
        assert_eq!(e.rows, 3);
    }
}
