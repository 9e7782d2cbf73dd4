//! Simulation settings, their defaults and where those come from, and the checks that
//! reject a configuration the layout can never serve.

use std::fmt;
use std::sync::Arc;

use attention_layout::EvictionPolicy;
use attention_layout::dims::Dims;

use super::SimError;
use super::rng::Rng;
use super::trace::Trace;

/// A distribution of token counts (prompt or output lengths). Draws are at least 1; the
/// workload then clips them to what the layout can hold (see [`Limits`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LengthDist {
    /// Always `n`.
    Fixed(u32),
    /// Uniform integers in `lo ..= hi`.
    Uniform {
        /// Smallest value.
        lo: u32,
        /// Largest value.
        hi: u32,
    },
    /// `round(exp(mu + sigma · N(0, 1)))`, at least 1 and at most `max`.
    LogNormal {
        /// Mean of the logarithm.
        mu: f64,
        /// Standard deviation of the logarithm.
        sigma: f64,
        /// Largest value (draws above are clipped to it); `None`: no bound.
        max: Option<u32>,
    },
}

impl LengthDist {
    /// Prompt lengths of the Azure LLM inference trace 2023, conversation service
    /// (`AzureLLMInferenceTrace_conv.csv`, `ContextTokens`): a log-normal fitted by maximum
    /// likelihood (mean and standard deviation of `ln tokens`) to 1,288 requests, the three
    /// 16 kB windows of the file at byte offsets 0, 180,000 and 540,000 (about 18:15,
    /// 18:32 and 18:57 of the one-hour trace; roughly 19,400 rows in all). Sample statistics:
    /// median 996, mean 945, p99 4,094, max 7,219 tokens; the fit has median 626 and mean
    /// 1,047. The trace is multi-modal (clusters near 200, 400, 1,000 and 4,000 tokens);
    /// the log-normal keeps its centre and spread, not its modes. Draws are clipped at the
    /// sample's largest value, 7,219 (the fit's tail is heavier than the trace's).
    /// Source: <https://github.com/Azure/AzurePublicDataset> (`data/`, commit 7909210),
    /// described in Patel et al., "Splitwise", ISCA 2024.
    pub const AZURE_CONV_PROMPT: Self = Self::LogNormal {
        mu: 6.44,
        sigma: 1.01,
        max: Some(7219),
    };

    /// Output lengths of the same sample (`GeneratedTokens`): median 172, mean 237, p99 614,
    /// max 939 tokens; the fit has median 174 and mean 253. Draws are clipped at 939.
    pub const AZURE_CONV_OUTPUT: Self = Self::LogNormal {
        mu: 5.16,
        sigma: 0.86,
        max: Some(939),
    };

    /// Parses `azure-conv` (the preset `preset`), `fixed:N`, `uniform:LO-HI` or
    /// `lognormal:MU,SIGMA[,MAX]`.
    pub fn parse(s: &str, preset: Self) -> Result<Self, String> {
        let s = s.trim();
        let bad = |why: &str| {
            format!(
                "bad length distribution `{s}`: {why} (expected azure-conv, fixed:N, uniform:LO-HI or lognormal:MU,SIGMA[,MAX])"
            )
        };
        let int = |t: &str| t.trim().parse::<u32>().map_err(|e| bad(&e.to_string()));
        let float = |t: &str| t.trim().parse::<f64>().map_err(|e| bad(&e.to_string()));
        let d = if s == "azure-conv" {
            preset
        } else if let Some(n) = s.strip_prefix("fixed:") {
            Self::Fixed(int(n)?)
        } else if let Some(r) = s.strip_prefix("uniform:") {
            let (lo, hi) = r.split_once('-').ok_or_else(|| bad("missing `-`"))?;
            Self::Uniform {
                lo: int(lo)?,
                hi: int(hi)?,
            }
        } else if let Some(r) = s.strip_prefix("lognormal:") {
            let mut parts = r.split(',');
            let (Some(mu), Some(sigma)) = (parts.next(), parts.next()) else {
                return Err(bad("missing `,`"));
            };
            let max = parts.next().map(int).transpose()?;
            if parts.next().is_some() {
                return Err(bad("too many values"));
            }
            Self::LogNormal {
                mu: float(mu)?,
                sigma: float(sigma)?,
                max,
            }
        } else {
            return Err(bad("unknown kind"));
        };
        d.check().map_err(|e| bad(&e))?;
        Ok(d)
    }

    /// Checks the parameters themselves (not against a layout).
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Self::Fixed(0) => Err("a fixed length must be at least 1".to_owned()),
            Self::Uniform { lo, hi } if lo == 0 || lo > hi => Err(format!(
                "uniform bounds must satisfy 1 <= lo <= hi, got {lo}-{hi}"
            )),
            Self::LogNormal { mu, sigma, .. }
                if !(mu.is_finite() && sigma.is_finite() && sigma >= 0.0 && mu < 32.0) =>
            {
                Err(format!(
                    "log-normal needs a finite mu below 32 and a finite sigma >= 0, got {mu}, {sigma}"
                ))
            }
            Self::LogNormal { max: Some(0), .. } => {
                Err("a log-normal maximum must be at least 1".to_owned())
            }
            _ => Ok(()),
        }
    }

    /// The smallest value a draw can take.
    pub fn min(&self) -> u32 {
        match *self {
            Self::Fixed(n) => n.max(1),
            Self::Uniform { lo, .. } => lo.max(1),
            Self::LogNormal { .. } => 1,
        }
    }

    /// One draw (at least 1).
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        match *self {
            Self::Fixed(n) => n.max(1),
            Self::Uniform { lo, hi } => rng.range_inclusive(lo, hi).max(1),
            Self::LogNormal { mu, sigma, max } => {
                let x = (mu + sigma * rng.normal()).exp().round();
                // `as` saturates (and maps NaN to 0).
                (x as u32).clamp(1, max.unwrap_or(u32::MAX).max(1))
            }
        }
    }
}

impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Fixed(n) => write!(f, "fixed {n}"),
            Self::Uniform { lo, hi } => write!(f, "uniform {lo}..={hi}"),
            Self::LogNormal {
                mu,
                sigma,
                max: None,
            } => write!(f, "log-normal(mu {mu}, sigma {sigma})"),
            Self::LogNormal {
                mu,
                sigma,
                max: Some(m),
            } => write!(f, "log-normal(mu {mu}, sigma {sigma}, max {m})"),
        }
    }
}

/// The simulated clock: how long a step of `n` tokens takes on the GPU, `base_ms +
/// per_token_us · n / 1000` milliseconds. Only arrivals are measured against it; the
/// metadata latency is measured for real.
///
/// Defaults: a rough roofline of an 8B-parameter bf16 model on one H100 SXM. Reading
/// 16 GB of weights at 3.35 TB/s takes 4.8 ms, about 8 ms at the 60 % of peak bandwidth
/// decode steps reach; a token costs 2 · 8·10⁹ FLOP, 32 µs at half of the 989 TFLOP/s
/// dense bf16 peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepTime {
    /// Fixed cost of a step, milliseconds.
    pub base_ms: f64,
    /// Cost per token, microseconds.
    pub per_token_us: f64,
}

impl Default for StepTime {
    fn default() -> Self {
        Self {
            base_ms: 8.0,
            per_token_us: 32.0,
        }
    }
}

impl StepTime {
    /// Seconds a step of `tokens` tokens takes.
    pub fn seconds(&self, tokens: u32) -> f64 {
        (self.base_ms + self.per_token_us * f64::from(tokens) / 1000.0) / 1000.0
    }
}

/// Most steps a run takes, arrivals and drain together. A run keeps one
/// [`StepRecord`](super::StepRecord) per step (48 bytes, and 8 more while the report sorts
/// the latencies: about 560 MB at the cap; the default run takes about 6,000 steps). More
/// arrival steps are refused before the run; a drain that would pass the cap stops with
/// [`SimError::TooLong`].
pub const MAX_STEPS: u64 = 10_000_000;

/// Most requests the waiting queue holds (40 bytes each: 40 MB). Arrivals faster than the
/// layout serves them grow the queue without bound, so an arrival that would pass this
/// stops the run with [`SimError::Overloaded`] (at `--rate 1e9` in the second step)
/// instead of growing it further (the default layout at twice its sustainable rate,
/// `--rate 40`, finishes its 10,197 requests without coming near it). With [`MAX_STEPS`]
/// this bounds the memory of any accepted run.
pub const MAX_WAITING: usize = 1_000_000;

/// Everything a simulation run needs besides the layout and the backend.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Seed of every random draw (arrivals, lengths, draft acceptance: separate streams).
    pub seed: u64,
    /// Steps during which requests arrive.
    pub steps: u64,
    /// After `steps`, keep stepping without arrivals until every request has finished.
    pub drain: bool,
    /// Mean arrivals per simulated second (Poisson process).
    pub rate: f64,
    /// Prompt lengths.
    pub prompt: LengthDist,
    /// Output lengths (tokens to generate).
    pub output: LengthDist,
    /// Tokens per step; `None`: the layout's `max_tokens`.
    pub token_budget: Option<u32>,
    /// Probability that a draft token is accepted, given the previous one was (used when
    /// the layout has speculative tokens): a decode row accepts its first `a` drafts, `a`
    /// drawn as leading successes of `s` Bernoulli trials. The default 0.7 is a round
    /// figure in the range reported for draft-model and multi-token-prediction drafters; it
    /// models no particular one.
    pub acceptance: f64,
    /// The simulated clock.
    pub step_time: StepTime,
    /// Recorded arrivals to replay instead of the Poisson process (`rate`, `prompt` and
    /// `output` are then unused). Arrivals stop after `steps` steps or at the trace's end.
    pub trace: Option<Arc<Trace>>,
    /// Bucket-aware chunking: the scheduler may shorten a step's last prefill chunk so the
    /// step lands exactly on a bucket's token count (see [`super::scheduler`]).
    pub bucket_chunking: bool,
    /// Prefix caching (`--prefix-caching`): `None` runs without it.
    pub prefix_caching: Option<EvictionPolicy>,
    /// Durable Mamba state slots of the prefix cache (hybrid layouts; `None`: the
    /// layout's `[memory] prefix_caching_mamba_gb`, or memory-only prefix caching without
    /// it).
    pub prefix_mamba_slots: Option<usize>,
    /// Tokens of a system prompt every request starts with (`--system-prompt`; 0: none).
    pub system_prompt: u32,
    /// Turns per conversation (`--turns`): turn `k` of a conversation resends the previous
    /// turn's prompt and output before its own drawn prompt (1: independent requests).
    pub turns: u32,
}

impl Default for SimConfig {
    /// 5,000 steps then drain, 20 requests/s, Azure conversation lengths, the layout's
    /// token budget, 0.7 draft acceptance, seed 1.
    ///
    /// 20 requests/s is about what the default layout (Nemotron-H-8B, 256 requests) serves
    /// at these lengths under the default clock: at 40 requests/s the simulator finishes
    /// about 20 per simulated second and the queue grows without bound.
    fn default() -> Self {
        Self {
            seed: 1,
            steps: 5000,
            drain: true,
            rate: 20.0,
            prompt: LengthDist::AZURE_CONV_PROMPT,
            output: LengthDist::AZURE_CONV_OUTPUT,
            token_budget: None,
            acceptance: 0.7,
            step_time: StepTime::default(),
            trace: None,
            bucket_chunking: false,
            prefix_caching: None,
            prefix_mamba_slots: None,
            system_prompt: 0,
            turns: 1,
        }
    }
}

/// What the layout allows a request, worked out by [`SimConfig::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// KV positions one request may use: `min(max_seq_len, usable blocks · block_size)`.
    pub positions: u64,
    /// Longest prompt: `positions − s − 1` (room for one decode step).
    pub max_prompt: u32,
    /// `s`.
    pub speculative_tokens: u32,
    /// Tokens per step.
    pub token_budget: u32,
}

impl Limits {
    /// Clips a drawn `(prompt, output)` pair to what the layout holds: the prompt to
    /// `max_prompt`, then the output so that `prompt + output − 1 + s ≤ positions` and
    /// `prompt + output ≤ positions` (so that the batch state's admission rule, Megatron's
    /// `prompt + output ≤ max_seq_len`, holds; the tighter of the two only when `s = 0`).
    pub fn clip(&self, prompt: u32, output: u32) -> (u32, u32) {
        let p = prompt.clamp(1, self.max_prompt);
        let room = self
            .positions
            .saturating_add(1)
            .saturating_sub(u64::from(p) + u64::from(self.speculative_tokens.max(1)));
        let o = u64::from(output.max(1)).min(room.max(1));
        (p, u32::try_from(o).unwrap_or(u32::MAX))
    }
}

impl SimConfig {
    /// Checks the configuration against a layout and works out its [`Limits`].
    ///
    /// # Errors
    ///
    /// [`SimError::Config`] naming the setting: zero steps or more than [`MAX_STEPS`]; a rate that is not a positive
    /// finite number; an acceptance outside `[0, 1]`; a token budget outside
    /// `[s + 1, max_tokens]`; a clock that does not advance; a length distribution whose
    /// every draw is too long for the layout.
    pub fn check<D: Dims>(&self, dims: &D) -> Result<Limits, SimError> {
        let err = |m: String| Err(SimError::Config(m));
        if self.steps == 0 {
            return err("steps must be at least 1".to_owned());
        }
        if self.steps > MAX_STEPS {
            return err(format!(
                "steps must be at most {MAX_STEPS} (a run keeps a record of every step), got {}",
                self.steps
            ));
        }
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return err(format!(
                "rate must be a positive number of requests per second, got {}",
                self.rate
            ));
        }
        if !self.rate.recip().is_finite() {
            return err(format!(
                "rate {:e} requests per second is too small: the mean time between arrivals, 1 / rate, is not a finite number of seconds",
                self.rate
            ));
        }
        if self.turns == 0 {
            return err("turns must be at least 1".to_owned());
        }
        if self.prefix_mamba_slots.is_some() && self.prefix_caching.is_none() {
            return err("Mamba cache slots need prefix caching (--prefix-caching)".to_owned());
        }
        if !(0.0..=1.0).contains(&self.acceptance) {
            return err(format!(
                "acceptance must lie in [0, 1], got {}",
                self.acceptance
            ));
        }
        let st = self.step_time;
        if !(st.base_ms.is_finite()
            && st.base_ms > 0.0
            && st.per_token_us.is_finite()
            && st.per_token_us >= 0.0)
        {
            return err(format!(
                "the step time needs a base above 0 ms and a per-token cost of at least 0 µs, got {} ms and {} µs",
                st.base_ms, st.per_token_us
            ));
        }
        self.prompt
            .check()
            .map_err(|e| SimError::Config(format!("prompt length: {e}")))?;
        self.output
            .check()
            .map_err(|e| SimError::Config(format!("output length: {e}")))?;
        let s = u32::try_from(dims.speculative_tokens()).unwrap_or(u32::MAX);
        let t = u32::try_from(dims.max_tokens()).unwrap_or(u32::MAX);
        let budget = self.token_budget.unwrap_or(t);
        if budget < s.saturating_add(1) || budget > t {
            return err(format!(
                "token budget must lie in [speculative_tokens + 1, max_tokens] = [{}, {t}], got {budget}",
                s.saturating_add(1)
            ));
        }
        let usable = u64::try_from(dims.dummy_block()).unwrap_or(0);
        let by_pool = usable.saturating_mul(dims.block_size() as u64);
        let positions = (dims.max_seq_len() as u64).min(by_pool);
        let what = if by_pool < dims.max_seq_len() as u64 {
            format!("the KV pool's {usable} blocks of {}", dims.block_size())
        } else {
            format!("max_seq_len {}", dims.max_seq_len())
        };
        let need = u64::from(s) + 2;
        if positions < need {
            return err(format!(
                "the layout holds {positions} positions per request ({what}); a one-token prompt with one decode step needs {need}"
            ));
        }
        let max_prompt = u32::try_from(positions - u64::from(s) - 1).unwrap_or(u32::MAX);
        if self.prompt.min() > max_prompt {
            return err(format!(
                "prompt length distribution {} never fits: its shortest prompt ({} tokens) is longer than the {max_prompt} tokens a prompt can have ({what}, less {} for the first decode step)",
                self.prompt,
                self.prompt.min(),
                s + 1
            ));
        }
        let shortest = self.positions(self.prompt.min(), self.output.min(), s);
        if shortest > positions {
            return err(format!(
                "output length distribution {} never fits: the shortest request ({} prompt and {} output tokens) needs {shortest} positions, more than {positions} ({what})",
                self.output,
                self.prompt.min(),
                self.output.min()
            ));
        }
        Ok(Limits {
            positions,
            max_prompt,
            speculative_tokens: s,
            token_budget: budget,
        })
    }

    fn positions(&self, prompt: u32, output: u32, s: u32) -> u64 {
        if output <= 1 {
            u64::from(prompt)
        } else {
            u64::from(prompt) + u64::from(output) - 1 + u64::from(s)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        reason = "Test code: a panic is a failed test."
    )]

    use super::*;

    #[test]
    fn parse_distributions() {
        let p = LengthDist::AZURE_CONV_PROMPT;
        assert_eq!(LengthDist::parse("azure-conv", p).unwrap(), p);
        assert_eq!(
            LengthDist::parse("fixed:12", p).unwrap(),
            LengthDist::Fixed(12)
        );
        assert_eq!(
            LengthDist::parse("uniform:3-9", p).unwrap(),
            LengthDist::Uniform { lo: 3, hi: 9 }
        );
        assert_eq!(
            LengthDist::parse("lognormal:5,0.5", p).unwrap(),
            LengthDist::LogNormal {
                mu: 5.0,
                sigma: 0.5,
                max: None
            }
        );
        assert_eq!(
            LengthDist::parse("lognormal:5,0.5,900", p).unwrap(),
            LengthDist::LogNormal {
                mu: 5.0,
                sigma: 0.5,
                max: Some(900)
            }
        );
        for bad in [
            "fixed:0",
            "uniform:9-3",
            "uniform:0-3",
            "lognormal:1",
            "lognormal:1,-1",
            "lognormal:nan,1",
            "lognormal:1,1,0",
            "lognormal:1,1,5,6",
            "poisson:3",
            "fixed:x",
        ] {
            assert!(LengthDist::parse(bad, p).is_err(), "{bad}");
        }
    }

    #[test]
    fn lognormal_fit_matches_its_moments() {
        let mut r = Rng::new(3);
        let d = LengthDist::AZURE_CONV_OUTPUT;
        let mut xs: Vec<u32> = (0..100_000).map(|_| d.sample(&mut r)).collect();
        xs.sort_unstable();
        let median = xs[xs.len() / 2];
        assert!((165..=185).contains(&median), "{median}");
        assert!(*xs.last().unwrap() <= 939);
    }

    #[test]
    fn clip_keeps_requests_inside_the_layout() {
        let l = Limits {
            positions: 100,
            max_prompt: 97,
            speculative_tokens: 2,
            token_budget: 64,
        };
        assert_eq!(l.clip(500, 500), (97, 2));
        assert_eq!(l.clip(10, 500), (10, 89));
        assert_eq!(l.clip(10, 5), (10, 5));
        // prompt + output - 1 + s <= positions
        let (p, o) = l.clip(50, 1000);
        assert_eq!(u64::from(p + o - 1 + 2), 100);
        // Without draft tokens, prompt + output <= positions (the admission rule).
        let l = Limits {
            speculative_tokens: 0,
            ..l
        };
        assert_eq!(l.clip(50, 1000), (50, 50));
        assert_eq!(l.clip(99, 5), (97, 3));
    }
}
