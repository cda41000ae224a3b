//! The Wing & Gong search, with Lowe's memoisation, over the calls of one partition.
//!
//! The calls' invocations and returns form one doubly linked list, ordered by time (at equal
//! times invocations come first: such calls overlap). The search walks the list from the front:
//! at an invocation it tries to linearize that call now (the model must accept it from the
//! current state) and, on success, *lifts* the call's two entries out of the list and starts
//! again from the front; at a return it has met a call that should already have been
//! linearized, so it backtracks: it pops the last linearized call, *unlifts* it (puts its
//! entries back where they were) and tries the entry after it.
//!
//! Memoisation: a (set of linearized calls, model state) pair that was reached once will fail the
//! same way again, so each pair is explored at most once. Sets are bitsets; their hash is kept
//! incrementally (one random word per call, XORed in and out), so a lookup costs the state's hash.
//!
//! Pending calls (unknown outcome) return at +infinity, after every other entry: they may be
//! linearized anywhere after their invocation, or never. The search succeeds as soon as every
//! call with a known return is linearized.
//!
//! Invariants: the list holds exactly the entries of calls not linearized; `stack` holds the
//! linearized calls in order with the state before each; the bitset and its hash always describe
//! the calls on `stack`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

use util::SplitMix64;
use util::splitmix::GOLDEN_GAMMA;

use super::history::Call;
use super::model::Model;

/// How often (in search steps) the search looks at the clock.
const CLOCK_CHECK_INTERVAL_STEPS: u64 = 4096;

/// List index of the sentinel head (and "no entry").
const HEAD: u32 = 0;

/// Limits on one run of a search.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Give up (answer unknown) at this instant.
    pub deadline: Option<Instant>,
    /// Give up (answer unknown) when the memo holds this many (set, state) pairs.
    pub cache_entries_max: usize,
}

impl Limits {
    /// No limits at all (tests and tiny histories only).
    pub fn none() -> Limits {
        Limits {
            deadline: None,
            cache_entries_max: usize::MAX,
        }
    }
}

/// How a search ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SearchResult {
    /// Every call with a known return was linearized in this order (local indices); pending
    /// calls in it took effect, the others never did.
    Linearizable {
        /// The linearization, as indices into the searched slice.
        order: Vec<usize>,
    },
    /// No linearization exists.
    NotLinearizable,
    /// A limit was hit first: nothing is known.
    Exhausted {
        /// Which limit.
        reason: Exhaustion,
    },
}

/// Which limit ended a search early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhaustion {
    /// The deadline passed.
    Time,
    /// The memo grew to its size limit.
    Memory,
}

/// The search's result with what it learned on the way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchOutcome {
    /// The answer.
    pub result: SearchResult,
    /// The longest sequence of calls (local indices) the search managed to linearize.
    pub best_prefix: Vec<usize>,
    /// The call whose return stopped that longest attempt: it could not be placed after
    /// `best_prefix`.
    pub culprit: Option<usize>,
    /// Search steps taken.
    pub steps: u64,
    /// (set, state) pairs memoised.
    pub cache_entries: usize,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    call: u32,
    is_return: bool,
    prev: u32,
    next: u32,
    /// For an invocation: the list index of its return.
    partner: u32,
}

/// A hasher for keys that are already well-mixed 64-bit hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A small fast hasher for model states (multiply-rotate, one word at a time).
#[derive(Default)]
struct StateHasher(u64);

impl Hasher for StateHasher {
    fn finish(&self) -> u64 {
        // SplitMix64's first draw from the state: a bijection that spreads the hash's bits.
        SplitMix64::new(self.0).next_u64()
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let mut tail = 0u64;
        for &b in chunks.remainder() {
            tail = (tail << 8) | u64::from(b);
        }
        self.write_u64(tail ^ (bytes.len() as u64).rotate_left(56));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(GOLDEN_GAMMA);
    }
    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The memo: (bitset, state) pairs, stored flat, chained by hash.
struct Memo<S> {
    words_per_set: usize,
    /// Head of each hash chain: index into `states`.
    heads: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
    /// Next entry in the same chain (`u32::MAX` ends it).
    next: Vec<u32>,
    words: Vec<u64>,
    states: Vec<S>,
}

impl<S: Eq + Clone> Memo<S> {
    fn new(words_per_set: usize) -> Self {
        Memo {
            words_per_set,
            heads: HashMap::default(),
            next: Vec::new(),
            words: Vec::new(),
            states: Vec::new(),
        }
    }

    fn len(&self) -> usize {
        self.states.len()
    }

    /// Inserts the pair; false if it was already there.
    fn insert(&mut self, hash: u64, set: &[u64], state: &S) -> bool {
        let w = self.words_per_set;
        let head = self.heads.get(&hash).copied().unwrap_or(u32::MAX);
        let mut at = head;
        while at != u32::MAX {
            let i = at as usize;
            if &self.words[i * w..(i + 1) * w] == set && self.states[i] == *state {
                return false;
            }
            at = self.next[i];
        }
        let index = self.states.len() as u32;
        self.next.push(head);
        self.words.extend_from_slice(set);
        self.states.push(state.clone());
        self.heads.insert(hash, index);
        true
    }
}

/// Searches for a linearization of `calls` (one partition) under `model`, to the end or to a
/// limit.
pub fn search<M: Model>(model: &M, calls: &[&Call], limits: &Limits) -> SearchOutcome {
    let mut search = Search::new(model, calls.to_vec());
    search.run(u64::MAX, limits);
    search.finish()
}

/// A search that can be run in slices: [`Search::run`] stops after a number of steps and a
/// later call carries on where it stopped. [`check`](super::check::check()) interleaves the partitions
/// this way, so that a quick violation in one key is not hidden behind a slow search of another.
pub struct Search<'a, M: Model> {
    model: &'a M,
    calls: Vec<&'a Call>,
    nodes: Vec<Node>,
    /// One random word per call: the set's hash is the XOR of its calls' words.
    zobrist: Vec<u64>,
    set: Vec<u64>,
    set_hash: u64,
    memo: Memo<M::State>,
    state: M::State,
    /// The linearized calls (their invocation's list index) with the state before each.
    stack: Vec<(u32, M::State)>,
    /// The list entry to look at next.
    entry: u32,
    /// Calls with a known return not yet linearized: the search succeeds when it reaches 0.
    remaining_known: usize,
    outcome: SearchOutcome,
    done: bool,
}

impl<'a, M: Model> Search<'a, M> {
    /// Prepares a search of `calls` (one partition).
    pub fn new(model: &'a M, calls: Vec<&'a Call>) -> Self {
        let n = calls.len();
        let remaining_known = calls.iter().filter(|c| c.ret.is_some()).count();
        let nodes = build_list(&calls);
        let words_per_set = n.div_ceil(64);
        let entry = nodes[HEAD as usize].next;
        Search {
            model,
            zobrist: (0..n as u64)
                .map(|i| SplitMix64::new(i ^ 0x5EED).next_u64())
                .collect(),
            set: vec![0u64; words_per_set],
            set_hash: 0,
            memo: Memo::new(words_per_set),
            state: model.init(),
            stack: Vec::new(),
            entry,
            remaining_known,
            outcome: SearchOutcome {
                result: SearchResult::Linearizable { order: Vec::new() },
                best_prefix: Vec::new(),
                culprit: None,
                steps: 0,
                cache_entries: 0,
            },
            done: remaining_known == 0,
            nodes,
            calls,
        }
    }

    /// True once the search has an answer (or hit a limit, which is final too).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// (set, state) pairs memoised so far.
    pub fn cache_entries(&self) -> usize {
        self.memo.len()
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.outcome.steps
    }

    /// Runs at most `steps_max` more steps; returns true when the search is done.
    pub fn run(&mut self, steps_max: u64, limits: &Limits) -> bool {
        let mut taken = 0u64;
        while !self.done {
            if taken == steps_max {
                return false;
            }
            // The first step of every run looks at the clock, so a spent budget answers at once.
            if taken.is_multiple_of(CLOCK_CHECK_INTERVAL_STEPS)
                && limits.deadline.is_some_and(|d| Instant::now() >= d)
            {
                self.stop(SearchResult::Exhausted {
                    reason: Exhaustion::Time,
                });
                break;
            }
            taken += 1;
            self.outcome.steps += 1;
            self.step(limits);
        }
        true
    }

    /// The result, once [`Search::run`] returned true (before that: an exhausted search).
    pub fn finish(mut self) -> SearchOutcome {
        if !self.done {
            self.outcome.result = SearchResult::Exhausted {
                reason: Exhaustion::Time,
            };
        }
        self.outcome.cache_entries = self.memo.len();
        self.outcome
    }

    fn stop(&mut self, result: SearchResult) {
        self.outcome.result = result;
        self.done = true;
    }

    fn order(&self) -> Vec<usize> {
        self.stack
            .iter()
            .map(|(e, _)| self.nodes[*e as usize].call as usize)
            .collect()
    }

    /// One step: try to linearize the call at `entry`, or backtrack at a return.
    fn step(&mut self, limits: &Limits) {
        let entry = self.entry;
        let node = self.nodes[entry as usize];
        if entry != HEAD && !node.is_return {
            let c = node.call as usize;
            let call = self.calls[c];
            if let Some(next_state) = self.model.step(&self.state, &call.op, &call.output) {
                self.set[c / 64] ^= 1 << (c % 64);
                let next_hash = self.set_hash ^ self.zobrist[c];
                let mut hasher = StateHasher(next_hash);
                next_state.hash(&mut hasher);
                if self.memo.insert(hasher.finish(), &self.set, &next_state) {
                    if self.memo.len() >= limits.cache_entries_max {
                        self.stop(SearchResult::Exhausted {
                            reason: Exhaustion::Memory,
                        });
                        return;
                    }
                    let previous = std::mem::replace(&mut self.state, next_state);
                    self.stack.push((entry, previous));
                    self.set_hash = next_hash;
                    lift(&mut self.nodes, entry);
                    if call.ret.is_some() {
                        self.remaining_known -= 1;
                        if self.remaining_known == 0 {
                            let order = self.order();
                            self.outcome.best_prefix = order.clone();
                            self.stop(SearchResult::Linearizable { order });
                            return;
                        }
                    }
                    self.entry = self.nodes[HEAD as usize].next;
                    return;
                }
                // Seen before: this branch fails the way it failed then.
                self.set[c / 64] ^= 1 << (c % 64);
            }
            self.entry = node.next;
            return;
        }
        // A return: its call should have been linearized by now, so the calls on the stack
        // cannot be extended from here. (The list always ends in returns, so `entry` is never
        // the head while calls with a known return remain.)
        if entry != HEAD && self.stack.len() >= self.outcome.best_prefix.len() {
            self.outcome.best_prefix = self.order();
            self.outcome.culprit = Some(node.call as usize);
        }
        let Some((top, previous)) = self.stack.pop() else {
            self.stop(SearchResult::NotLinearizable);
            return;
        };
        let c = self.nodes[top as usize].call as usize;
        self.set[c / 64] ^= 1 << (c % 64);
        self.set_hash ^= self.zobrist[c];
        self.state = previous;
        if self.calls[c].ret.is_some() {
            self.remaining_known += 1;
        }
        unlift(&mut self.nodes, top);
        self.entry = self.nodes[top as usize].next;
    }
}

/// The entry list: index 0 is the head; then each call's invocation and return, in time order.
fn build_list(calls: &[&Call]) -> Vec<Node> {
    // (finite?, time, invocation first, call)
    let mut order: Vec<(u8, u64, u8, u32)> = Vec::with_capacity(calls.len() * 2);
    for (i, call) in calls.iter().enumerate() {
        order.push((0, call.invoke, 0, i as u32));
        match call.ret {
            Some(t) => order.push((0, t, 1, i as u32)),
            None => order.push((1, 0, 1, i as u32)),
        }
    }
    order.sort_unstable();
    let len = order.len() as u32;
    let mut nodes = Vec::with_capacity(order.len() + 1);
    nodes.push(Node {
        call: u32::MAX,
        is_return: false,
        prev: len,
        next: if len == 0 { HEAD } else { 1 },
        partner: HEAD,
    });
    let mut return_at = vec![HEAD; calls.len()];
    for (k, &(_, _, kind, call)) in order.iter().enumerate() {
        let index = k as u32 + 1;
        if kind == 1 {
            return_at[call as usize] = index;
        }
        nodes.push(Node {
            call,
            is_return: kind == 1,
            prev: index - 1,
            next: if index == len { HEAD } else { index + 1 },
            partner: HEAD,
        });
    }
    for node in nodes.iter_mut().skip(1) {
        if !node.is_return {
            node.partner = return_at[node.call as usize];
        }
    }
    nodes
}

/// Takes an invocation and its return out of the list.
fn lift(nodes: &mut [Node], invoke: u32) {
    for at in [invoke, nodes[invoke as usize].partner] {
        let Node { prev, next, .. } = nodes[at as usize];
        nodes[prev as usize].next = next;
        nodes[next as usize].prev = prev;
    }
}

/// Puts back what [`lift`] took out, in reverse order.
fn unlift(nodes: &mut [Node], invoke: u32) {
    for at in [nodes[invoke as usize].partner, invoke] {
        let Node { prev, next, .. } = nodes[at as usize];
        nodes[prev as usize].next = at;
        nodes[next as usize].prev = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lincheck::history::{Operation, Output};
    use crate::lincheck::model::RegisterModel;

    fn call(id: usize, invoke: u64, ret: Option<u64>, op: Operation, output: Output) -> Call {
        Call {
            id,
            process: id as u64,
            op,
            output,
            invoke,
            ret,
            invoke_line: 0,
            return_line: None,
        }
    }

    fn write(v: &str) -> Operation {
        Operation::Put {
            key: String::new(),
            value: v.into(),
        }
    }

    fn read() -> Operation {
        Operation::Get { key: String::new() }
    }

    fn seen(v: &str) -> Output {
        Output::Value(Some(v.into()))
    }

    fn run(calls: &[Call]) -> SearchOutcome {
        let refs: Vec<&Call> = calls.iter().collect();
        let limits = Limits {
            deadline: None,
            cache_entries_max: usize::MAX,
        };
        search(&RegisterModel::default(), &refs, &limits)
    }

    #[test]
    fn given_overlapping_write_and_read_when_searched_then_the_read_may_go_first_or_last() {
        // write 1 [0,10], read -> absent [1,2], read -> 1 [3,4]
        let calls = [
            call(0, 0, Some(10), write("1"), Output::Done),
            call(1, 1, Some(2), read(), Output::Value(None)),
            call(2, 3, Some(4), read(), seen("1")),
        ];
        let outcome = run(&calls);
        assert_eq!(
            outcome.result,
            SearchResult::Linearizable {
                order: vec![1, 0, 2]
            }
        );
    }

    #[test]
    fn given_a_stale_read_after_a_completed_write_when_searched_then_not_linearizable() {
        let calls = [
            call(0, 0, Some(1), write("1"), Output::Done),
            call(1, 2, Some(3), write("2"), Output::Done),
            call(2, 4, Some(5), read(), seen("1")),
        ];
        let outcome = run(&calls);
        assert_eq!(outcome.result, SearchResult::NotLinearizable);
        assert_eq!(outcome.best_prefix, vec![0, 1]);
        assert_eq!(outcome.culprit, Some(2));
    }

    #[test]
    fn given_a_pending_write_when_a_later_read_sees_it_then_linearizable() {
        let calls = [
            call(0, 0, None, write("7"), Output::Unknown),
            call(1, 5, Some(6), read(), seen("7")),
        ];
        assert!(matches!(
            run(&calls).result,
            SearchResult::Linearizable { .. }
        ));
    }

    #[test]
    fn given_a_pending_write_when_reads_see_it_come_and_go_then_not_linearizable() {
        // A pending write may take effect once; it cannot be seen, then unseen, then seen.
        let calls = [
            call(0, 0, None, write("7"), Output::Unknown),
            call(1, 1, Some(2), read(), seen("7")),
            call(2, 3, Some(4), read(), Output::Value(None)),
        ];
        assert_eq!(run(&calls).result, SearchResult::NotLinearizable);
    }

    #[test]
    fn given_no_calls_when_searched_then_linearizable() {
        assert!(matches!(run(&[]).result, SearchResult::Linearizable { .. }));
    }

    #[test]
    fn given_a_tiny_memo_when_searching_then_the_answer_is_unknown_not_a_guess() {
        let calls: Vec<Call> = (0..6)
            .map(|i| call(i, 0, Some(100), write(&i.to_string()), Output::Done))
            .chain([call(6, 200, Some(201), read(), seen("nope"))])
            .collect();
        let refs: Vec<&Call> = calls.iter().collect();
        let limits = Limits {
            deadline: None,
            cache_entries_max: 3,
        };
        let outcome = search(&RegisterModel::default(), &refs, &limits);
        assert_eq!(
            outcome.result,
            SearchResult::Exhausted {
                reason: Exhaustion::Memory
            }
        );
    }
}
