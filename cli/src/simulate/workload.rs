//! Request arrivals: a Poisson process (exponential inter-arrival times) on the simulated
//! clock, each request with a prompt and an output length drawn from the configured
//! distributions and clipped to the layout; or the requests of a recorded [`Trace`],
//! clipped the same way.
//!
//! Shared prefixes ([`SimConfig::system_prompt`], [`SimConfig::turns`]): every prompt
//! starts with the same system prompt, and turn `k` of a conversation (arrivals `c·K ..
//! c·K + K` form conversation `c`) resends its previous turn's prompt and output before
//! its own drawn tokens. Prompt token ids are synthetic but deterministic
//! ([`prompt_tokens`]): the system prompt's are fixed, the others depend only on the
//! conversation and the position, so two prompts share a prefix exactly when the
//! workload means them to (and their block hashes then collide).

use std::sync::Arc;

use super::config::{LengthDist, Limits, SimConfig};
use super::rng::Rng;
use super::trace::Trace;

/// The random stream number of stream `k` (1: arrival times, 2: lengths, 3: draft
/// acceptance) of expert-parallel rank `rank`: `k + 3 · rank`, so rank 0 draws exactly what
/// a run without expert parallelism draws and every rank has streams of its own.
pub const fn stream_of_rank(rank: u32, k: u64) -> u64 {
    k + 3 * rank as u64
}

/// One arriving request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arrival {
    /// Arrival number, from 0.
    pub id: u64,
    /// Simulated time of arrival, seconds.
    pub time: f64,
    /// Prompt tokens (clipped).
    pub prompt_len: u32,
    /// Output tokens to generate (clipped).
    pub max_output: u32,
    /// The conversation it belongs to (its own arrival number with one turn per
    /// conversation).
    pub conversation: u64,
}

/// The prompt token ids of a request of `conversation` with `len` prompt tokens, the first
/// `system` of them the shared system prompt: position `p < system` holds `p + 1`, any
/// other position `(conversation + 1) · 2³² + p` (ids stay positive and distinct between
/// conversations).
pub fn prompt_tokens(system: u32, conversation: u64, len: u32) -> Vec<i64> {
    let base = i64::try_from(conversation.saturating_add(1).min(1 << 30)).unwrap_or(1 << 30) << 32;
    (0..len)
        .map(|p| {
            if p < system {
                i64::from(p) + 1
            } else {
                base + i64::from(p)
            }
        })
        .collect()
}

/// Where arrivals come from.
#[derive(Debug, Clone)]
enum Source {
    /// Poisson arrivals with drawn lengths.
    Drawn {
        times: Rng,
        lengths: Rng,
        rate: f64,
        prompt: LengthDist,
        output: LengthDist,
    },
    /// A recorded trace; `pos` is the index of the next request.
    Recorded { trace: Arc<Trace>, pos: usize },
}

/// The arrival process. Arrival times and lengths come from separate random streams, so
/// changing the rate keeps each request's lengths.
#[derive(Debug, Clone)]
pub struct Workload {
    source: Source,
    limits: Limits,
    next: Arrival,
    /// System prompt tokens, turns per conversation.
    system: u32,
    turns: u32,
    /// Tokens the current conversation's next turn resends (its last prompt and output).
    history: u32,
}

impl Workload {
    /// The arrival process of `config` (checked) under `limits`: its trace when it has
    /// one, else Poisson arrivals whose first request arrives after one exponential gap
    /// from time 0.
    pub fn new(config: &SimConfig, limits: Limits) -> Self {
        match &config.trace {
            Some(trace) => Self::start(
                Source::Recorded {
                    trace: Arc::clone(trace),
                    pos: 0,
                },
                limits,
                config,
            ),
            None => Self::for_rank(config, limits, 0, config.rate),
        }
    }

    /// The Poisson arrival process of expert-parallel rank `rank` at `rate` arrivals per
    /// simulated second: its own streams ([`stream_of_rank`]; rank 0's are those of
    /// [`new`](Self::new) without a trace).
    pub fn for_rank(config: &SimConfig, limits: Limits, rank: u32, rate: f64) -> Self {
        Self::start(
            Source::Drawn {
                times: Rng::stream(config.seed, stream_of_rank(rank, 1)),
                lengths: Rng::stream(config.seed, stream_of_rank(rank, 2)),
                rate,
                prompt: config.prompt,
                output: config.output,
            },
            limits,
            config,
        )
    }

    fn start(source: Source, limits: Limits, config: &SimConfig) -> Self {
        let mut w = Self {
            source,
            limits,
            next: Arrival {
                id: 0,
                time: 0.0,
                prompt_len: 1,
                max_output: 1,
                conversation: 0,
            },
            system: config.system_prompt,
            turns: config.turns.max(1),
            history: 0,
        };
        w.next = w.draw(0, 0.0);
        w
    }

    fn draw(&mut self, id: u64, after: f64) -> Arrival {
        let (time, p, o) = match &mut self.source {
            Source::Drawn {
                times,
                lengths,
                rate,
                prompt,
                output,
            } => {
                let time = after + times.exponential(*rate);
                let p = prompt.sample(lengths);
                (time, p, output.sample(lengths))
            }
            Source::Recorded { trace, pos } => {
                let next = trace.requests().get(*pos).copied();
                *pos += usize::from(next.is_some());
                match next {
                    Some(r) => (r.arrival_s, r.prompt_tokens, r.output_tokens),
                    // The trace is over: an arrival that never comes.
                    None => (f64::INFINITY, 1, 1),
                }
            }
        };
        let turns = u64::from(self.turns.max(1));
        if id.is_multiple_of(turns) {
            self.history = 0;
        }
        let p = p.saturating_add(self.history).saturating_add(self.system);
        let (prompt_len, max_output) = self.limits.clip(p, o);
        self.history = prompt_len
            .saturating_add(max_output)
            .saturating_sub(self.system);
        Arrival {
            id,
            time,
            prompt_len,
            max_output,
            conversation: id / turns,
        }
    }

    /// The next arrival, without taking it (at an infinite time once a trace is over).
    pub fn peek(&self) -> &Arrival {
        &self.next
    }

    /// Whether no request will ever arrive again (a trace that is over).
    pub fn is_exhausted(&self) -> bool {
        !self.next.time.is_finite()
    }

    /// Takes the next arrival and draws the one after it.
    pub fn take(&mut self) -> Arrival {
        let a = self.next;
        self.next = self.draw(a.id + 1, a.time);
        a
    }
}
