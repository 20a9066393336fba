//! Sharding the long methods' batched calls across module instances (web workers) by record and replay.
//!
//! Score-CAM, Ablation-CAM, Integrated Gradients, SmoothGrad, Occlusion and the evaluations' curves
//! make many independent batched calls (forwards, layer forwards, input gradients) whose inputs are
//! fixed before any of them runs. Each call gets an index in the order the method makes it. An
//! instance that **records** shard `i` of `k` computes only the calls whose index is `i` mod `k`,
//! answers the others with zeros (so the method runs on to its end quickly), and keeps what it
//! computed: its [`Tape`]. The method's result there is meaningless and is dropped. An instance that
//! **replays** the merged tapes answers every call from them, so the method computes the same map,
//! bit for bit, as without sharding, having run no batched compute itself.
//!
//! Later calls that depend on earlier outputs (an evaluation's curves follow the map its method
//! made) are separated by a **barrier** ([`crate::Explainer::tape_barrier`]): once a shard has
//! answered a call with zeros, the calls after the next barrier would run on made-up inputs, so it
//! stops recording there and says so (`Recorded::complete` false). The caller then records again
//! with the merged tapes as `known`: known calls are answered from them, the next stage is recorded.

use crate::error::{Error, Result};
use crate::fail;
use std::collections::BTreeMap;

/// The most instances a call may be split across.
pub const MAX_SHARDS: usize = 64;
/// The most calls a tape may hold (Occlusion's windows are the most: 65,536 in batches of 1 or more).
pub const MAX_CALLS: usize = 1 << 20;

/// Which share of the calls an instance computes: those whose index is `index` mod `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if !(1..=MAX_SHARDS).contains(&count) || index >= count {
            return fail!(Option, "shard {index} of {count} is not usable: the count must be 1 to {MAX_SHARDS} and the index below it");
        }
        Ok(Shard { index, count })
    }

    fn owns(&self, call: usize) -> bool {
        call % self.count == self.index
    }
}

/// The outputs of batched calls, by call index.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tape {
    calls: BTreeMap<usize, Vec<f32>>,
}

impl Tape {
    pub fn new() -> Tape {
        Tape::default()
    }

    pub fn insert(&mut self, call: usize, output: Vec<f32>) {
        self.calls.insert(call, output);
    }

    pub fn get(&self, call: usize) -> Option<&[f32]> {
        self.calls.get(&call).map(Vec::as_slice)
    }

    pub fn remove(&mut self, call: usize) -> Option<Vec<f32>> {
        self.calls.remove(&call)
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Every value the tape holds.
    pub fn values(&self) -> usize {
        self.calls.values().map(Vec::len).sum()
    }

    /// Adds another tape's calls; a call both hold must hold the same values.
    pub fn merge(&mut self, other: Tape) -> Result<()> {
        for (call, output) in other.calls {
            if let Some(mine) = self.calls.get(&call) {
                if mine.len() != output.len() || mine.iter().zip(&output).any(|(a, b)| a.to_bits() != b.to_bits()) {
                    return fail!(Input, "two tapes answer batched call {call} differently: they were not recorded for the same call");
                }
            }
            self.calls.insert(call, output);
        }
        Ok(())
    }

    /// The tape as (call indices, their output lengths, all outputs one after another).
    pub fn to_flat(&self) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let calls = self.calls.keys().map(|&c| c as u32).collect();
        let lengths = self.calls.values().map(|v| v.len() as u32).collect();
        let mut data = Vec::with_capacity(self.values());
        self.calls.values().for_each(|v| data.extend_from_slice(v));
        (calls, lengths, data)
    }

    /// The tape `to_flat` made, checked: as many lengths as calls, the lengths summing to the data,
    /// each call index below `MAX_CALLS` and given once.
    pub fn from_flat(calls: &[u32], lengths: &[u32], data: &[f32]) -> Result<Tape> {
        Tape::from_parts(calls, lengths, data.len(), |start, end| data[start..end].to_vec())
    }

    /// `from_flat` where the data lies elsewhere (a JS array): `copy(start, end)` copies a part of
    /// it, asked for only once the lengths are checked against `data_len`.
    pub fn from_parts(calls: &[u32], lengths: &[u32], data_len: usize, mut copy: impl FnMut(usize, usize) -> Vec<f32>) -> Result<Tape> {
        if calls.len() != lengths.len() || calls.len() > MAX_CALLS {
            return fail!(Input, "a tape of {} call indices and {} lengths is malformed (they pair up, at most {MAX_CALLS})", calls.len(), lengths.len());
        }
        let total = lengths.iter().try_fold(0usize, |t, &l| t.checked_add(l as usize));
        if total != Some(data_len) {
            return fail!(Input, "a tape's lengths sum to {total:?} values but it holds {data_len}");
        }
        let mut tape = Tape::new();
        let mut at = 0;
        for (&call, &len) in calls.iter().zip(lengths) {
            let call = call as usize;
            if call >= MAX_CALLS || tape.calls.contains_key(&call) {
                return fail!(Input, "a tape's call index {call} is out of range or given twice");
            }
            tape.calls.insert(call, copy(at, at + len as usize));
            at += len as usize;
        }
        Ok(tape)
    }
}

/// Whether `method` makes enough batched calls to be worth splitting across instances (a method
/// of one call or none gains nothing, and pays a forward pass per instance).
pub fn worth_sharding(method: crate::Method) -> bool {
    let needs = method.needs();
    needs.batched_forwards || needs.layer_forwards || method == crate::Method::SMOOTHGRAD
}

/// What recording a shard gave.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    /// The calls this shard computed.
    pub tape: Tape,
    /// False when it stopped at a barrier: record again with the merged tapes as `known`.
    pub complete: bool,
    /// Calls made in all (recorded, answered from `known`, or answered with zeros).
    pub calls: usize,
}

/// Record or replay, and where the calls stand.
#[derive(Debug)]
pub struct Taping {
    /// None: replay (every call answered from `known`).
    shard: Option<Shard>,
    known: Tape,
    recorded: Tape,
    next_call: usize,
    /// A call was answered with zeros: outputs after the next barrier would be made up.
    faked: bool,
    /// Past a barrier with `faked`: no more recording.
    stopped: bool,
    /// A computed call failed (its error is real, not an effect of the zeros).
    failed: bool,
    /// Inputs of the calls this shard computed: its share of the method's progress.
    units: usize,
}

impl Taping {
    /// Records `shard`, answering the calls `known` holds from it.
    pub fn record(shard: Shard, known: Tape) -> Taping {
        Taping { shard: Some(shard), known, recorded: Tape::new(), next_call: 0, faked: false, stopped: false, failed: false, units: 0 }
    }

    /// Answers every call from `tape`.
    pub fn replay(tape: Tape) -> Taping {
        Taping { shard: None, known: tape, recorded: Tape::new(), next_call: 0, faked: false, stopped: false, failed: false, units: 0 }
    }

    pub fn is_recording(&self) -> bool {
        self.shard.is_some()
    }

    /// Inputs of the calls this shard computed so far.
    pub fn units(&self) -> usize {
        self.units
    }

    /// The next call, of `units` inputs, whose output has `len` values; `run` computes it.
    pub fn call(&mut self, len: usize, units: usize, run: impl FnOnce() -> Result<Vec<f32>>) -> Result<Vec<f32>> {
        let call = self.next_call;
        self.next_call += 1;
        if let Some(out) = self.known.get(call) {
            if out.len() != len {
                return fail!(Input, "the tape answers batched call {call} with {} values, but the call takes {len}: it was recorded for another call or batch size", out.len());
            }
            // A replayed answer is read once: the tape's memory goes as the method runs.
            return Ok(if self.is_recording() { out.to_vec() } else { self.known.remove(call).unwrap_or_default() });
        }
        let Some(shard) = self.shard else {
            return fail!(Input, "the tape has no answer for batched call {call}: a shard's tape is missing or was recorded for another call");
        };
        if self.stopped || !shard.owns(call) {
            self.faked = true;
            return Ok(vec![0.0; len]);
        }
        let out = run().inspect_err(|_| self.failed = true)?;
        if out.len() != len {
            self.failed = true;
            return fail!(Internal, "batched call {call} gave {} values, not {len}", out.len());
        }
        self.recorded.insert(call, out.clone());
        self.units += units;
        Ok(out)
    }

    /// Calls after this point may depend on the outputs of those before it.
    pub fn barrier(&mut self) {
        if self.faked {
            self.stopped = true;
        }
    }

    /// The recording, given how the method run over it ended. An error is the method's own (and
    /// returned) when it is a cancellation, when a computed call failed, or when no call had been
    /// answered with zeros yet; after zeros, the method's error may be theirs (Ablation-CAM divides by
    /// a score), and the replay meets any real one again.
    pub fn finish<T>(self, outcome: Result<T>) -> Result<Recorded> {
        if self.shard.is_none() {
            return fail!(Internal, "a replay has no recording to finish");
        }
        match outcome {
            Err(e) if matches!(e, Error::Cancelled(_)) || self.failed || !self.faked => Err(e),
            _ => Ok(Recorded { tape: self.recorded, complete: !self.stopped, calls: self.next_call }),
        }
    }
}
