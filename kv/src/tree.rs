//! A persistent (structurally shared) B+tree: the ordered map under [`crate::KvStore`].
//!
//! Job: an ordered set of items, each carrying its own key ([`Keyed`]), whose `clone` is O(1)
//! so that a point-in-time view of a large map costs nothing to take. Nodes live behind `Arc`;
//! a mutation copies only the nodes on its path that are shared with another clone
//! (`Arc::make_mut`), so a view and the live tree share every node neither has touched since.
//!
//! Shape: items sit in leaves; a branch holds its children and, between each pair, a separator
//! that is a clone of the smallest item of the child on its right (for the store's entries, a
//! clone is one reference-count increment).
//!
//! Search hints: items are ordered by their key's bytes. Every node (a leaf over its items, a
//! branch over its separators) keeps the common prefix of those keys and, per slot, an 8-byte
//! hint: the key's bytes right after that prefix, big-endian and zero-padded. Items and
//! separators are each a separate heap allocation, so a binary search that read them would
//! miss cache at every probe; with hints it reads the node's own memory and dereferences an
//! item only where two hints tie (the key there equals the search key in those 8 bytes). A
//! search key that does not start with the node's prefix lies before or after every key of the
//! node, decided by comparing it with the prefix alone. Hints are plain data, cloned with the
//! node when a shared one is copied. They cost 8 bytes per slot (more with a leaf's spare
//! capacity) plus the prefix, capped at [`NODE_PREFIX_BYTES_MAX`], per node.
//!
//! Invariants (checked by [`Tree::check_invariants`]):
//! - items are in strictly increasing key order across the whole tree, and `len` counts them;
//! - every leaf is at the same depth;
//! - a branch has one more child than separators, and separator `i` has the key of the
//!   smallest item under child `i + 1`;
//! - a non-root node holds 1 to its capacity entries (items or children); a root branch holds
//!   at least 2 children; an empty tree is one empty leaf;
//! - two adjacent children of a branch hold together more than the capacity of one node (they
//!   could not be merged). This keeps nodes half full on average while still letting an insert
//!   at the end of a full leaf leave that leaf full (see [`LEAF_ITEMS_MAX`]); it is why removal
//!   only ever needs to merge, never to borrow;
//! - every node's prefix is exactly the common prefix of its keys, capped at
//!   [`NODE_PREFIX_BYTES_MAX`] (empty for a node without keys), and every hint is its key's 8
//!   bytes after that prefix. Since keys are sorted, the common prefix is that of the first and
//!   last key, so it changes only when one of those does (an insert outside the prefix
//!   shortens it without reading any item; a split or the removal of an end key lengthens it).

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

/// An item that carries its own key.
pub trait Keyed {
    /// The key type. Items are ordered by the key's bytes (lexicographically, as `[u8]`
    /// orders), which is what lets a node search by inline byte hints.
    type Key: AsRef<[u8]> + ?Sized;
    /// The item's key.
    fn key(&self) -> &Self::Key;
}

/// The bytes of an item's key: what the tree orders and searches by.
fn key_of<T: Keyed>(item: &T) -> &[u8] {
    item.key().as_ref()
}

/// Most items in one leaf.
///
/// 64 items of a 16-byte pointer are 1 KiB: large enough that the per-leaf overhead (the
/// `Arc` and `Vec` headers, one separator in the parent) is a few bytes per item, small enough
/// that copying a leaf shared with a view (64 reference-count increments) stays cheap on the
/// write path. Under `cfg(test)` the capacity is tiny so unit tests reach deep trees.
#[cfg(not(test))]
pub const LEAF_ITEMS_MAX: usize = 64;
/// Most items in one leaf (tiny under `cfg(test)`, so unit tests reach deep trees).
#[cfg(test)]
pub const LEAF_ITEMS_MAX: usize = 4;

/// Most children of one branch.
///
/// 32 keeps a million items within four levels while a branch copied on the write path is
/// 32 children and 31 separators: a lookup does a binary search of at most five comparisons
/// per branch. Under `cfg(test)` the capacity is tiny so unit tests reach deep trees.
#[cfg(not(test))]
pub const BRANCH_CHILDREN_MAX: usize = 32;
/// Most children of one branch (tiny under `cfg(test)`, so unit tests reach deep trees).
#[cfg(test)]
pub const BRANCH_CHILDREN_MAX: usize = 4;

/// Longest common key prefix a node keeps for its search hints (see the module documentation).
///
/// Keys that share more than this within one node still search correctly: their hints are
/// taken right after the capped prefix, and slots whose hints tie fall back to comparing whole
/// keys. 64 bytes covers the long shared prefixes of real keyspaces
/// (`/registry/pods/<namespace>/<name>-`) while bounding what a node holding one long key
/// keeps. Tiny under `cfg(test)` so that unit tests reach the cap.
#[cfg(not(test))]
pub const NODE_PREFIX_BYTES_MAX: usize = 64;
/// Longest common key prefix a node keeps (tiny under `cfg(test)`, so tests reach the cap).
#[cfg(test)]
pub const NODE_PREFIX_BYTES_MAX: usize = 12;

/// Key bytes in one slot's search hint (a `u64`).
const HINT_BYTES: usize = 8;

/// Deepest tree an iterator expects without growing its stack: more than enough for any tree
/// that fits in memory (a depth of 16 at half-full branches holds over 16^15 items).
const ITER_STACK_DEPTH: usize = 16;

/// Why [`Tree::from_sorted`] refused its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("item at position {position} does not have a key greater than the item before it")]
pub struct NotSorted {
    /// Position (from 0) of the first item out of order in the input.
    pub position: u64,
}

/// A node split off to the right of another, with its separator (its smallest item).
type Split<T> = (T, Arc<Node<T>>);

#[derive(Clone)]
enum Node<T> {
    Leaf(Keys<T>),
    Branch(Branch<T>),
}

#[derive(Clone)]
struct Branch<T> {
    /// `keys.items[i]` is a clone of the smallest item under `children[i + 1]`.
    keys: Keys<T>,
    children: Vec<Arc<Node<T>>>,
}

/// The 8 bytes of `key` from `offset`, big-endian and zero-padded past the key's end. For keys
/// that share their first `offset` bytes, hint order agrees with key order (a smaller hint
/// means a smaller key), and equal hints say nothing: compare the whole keys.
fn hint_at(key: &[u8], offset: usize) -> u64 {
    let mut bytes = [0u8; HINT_BYTES];
    if let Some(rest) = key.get(offset..) {
        let n = rest.len().min(HINT_BYTES);
        bytes[..n].copy_from_slice(&rest[..n]);
    }
    u64::from_be_bytes(bytes)
}

/// Length of the longest common prefix of `a` and `b`.
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A node's sorted items (a leaf's items or a branch's separators) with inline search hints,
/// so that a binary search reads the node's own memory and dereferences an item only to
/// break a tie between equal hints.
///
/// Invariants: `prefix` is the common prefix of every item's key, exactly, capped at
/// [`NODE_PREFIX_BYTES_MAX`] (empty when there are no items); `hints[i]` is
/// `hint_at(key of items[i], prefix.len())`. Since the items are sorted, their common prefix
/// is that of the first and the last, so it can change only when one of those does.
#[derive(Clone)]
struct Keys<T> {
    items: Vec<T>,
    prefix: Box<[u8]>,
    hints: Vec<u64>,
}

impl<T: Keyed> Keys<T> {
    fn new() -> Self {
        Keys {
            items: Vec::new(),
            prefix: Box::default(),
            hints: Vec::new(),
        }
    }

    /// Keys over `items`, which must be in strictly increasing key order.
    fn from_vec(items: Vec<T>) -> Self {
        let mut keys = Keys {
            items,
            prefix: Box::default(),
            hints: Vec::new(),
        };
        keys.rebuild();
        keys
    }

    fn len(&self) -> usize {
        self.items.len()
    }

    fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The length the prefix should have for the items held now (reads two items).
    fn fitted_prefix_len(&self) -> usize {
        match (self.items.first(), self.items.last()) {
            (Some(first), Some(last)) => {
                common_prefix_len(key_of(first), key_of(last)).min(NODE_PREFIX_BYTES_MAX)
            }
            _ => 0,
        }
    }

    /// Recomputes prefix and every hint from the items (reads every item).
    fn rebuild(&mut self) {
        let p = self.fitted_prefix_len();
        self.prefix = self
            .items
            .first()
            .map_or_else(Box::default, |first| key_of(first)[..p].into());
        let mut hints = Vec::with_capacity(self.items.capacity());
        hints.extend(self.items.iter().map(|item| hint_at(key_of(item), p)));
        self.hints = hints;
    }

    /// Shortens the prefix to its first `to` bytes (`to <= prefix.len()`), rewriting every
    /// hint from its old value and the bytes that leave the prefix: no item is read.
    fn shorten_prefix(&mut self, to: usize) {
        let p = self.prefix.len();
        debug_assert!(to <= p, "a prefix only shortens here");
        if to >= p {
            return;
        }
        // The bytes that move from the prefix into the hints come first in every hint.
        let moved = p - to;
        let head = hint_at(&self.prefix, to);
        if moved >= HINT_BYTES {
            self.hints.iter_mut().for_each(|hint| *hint = head);
        } else {
            let shift = 8 * moved as u32;
            self.hints
                .iter_mut()
                .for_each(|hint| *hint = head | (*hint >> shift));
        }
        self.prefix = self.prefix[..to].into();
    }

    /// After the first or last item changed: brings the prefix to the items' common prefix.
    fn refit(&mut self) {
        let fitted = self.fitted_prefix_len();
        match fitted.cmp(&self.prefix.len()) {
            Ordering::Less => self.shorten_prefix(fitted),
            Ordering::Equal => {}
            Ordering::Greater => self.rebuild(),
        }
    }

    /// Makes room in `hints` for as many slots as `items` has: the two grow together.
    fn match_capacity(&mut self) {
        let want = self.items.capacity();
        if self.hints.capacity() < want {
            self.hints.reserve_exact(want - self.hints.len());
        }
    }

    /// Where `key` is: `Ok(i)` if `items[i]` has it, else `Err(i)` with `i` the position
    /// where it would be inserted. Reads items only where hints tie.
    fn search(&self, key: &[u8]) -> Result<usize, usize> {
        if !key.starts_with(&self.prefix) {
            // Every item starts with the prefix, which `key` leaves or ends before: `key`
            // lies before all of them or after all of them, as it compares to the prefix.
            return Err(if key < &self.prefix[..] {
                0
            } else {
                self.items.len()
            });
        }
        let hint = hint_at(key, self.prefix.len());
        let (mut low, mut high) = (0, self.hints.len());
        while low < high {
            let middle = low + (high - low) / 2;
            let order = self.hints[middle]
                .cmp(&hint)
                .then_with(|| key_of(&self.items[middle]).cmp(key));
            match order {
                Ordering::Less => low = middle + 1,
                Ordering::Greater => high = middle,
                Ordering::Equal => return Ok(middle),
            }
        }
        Err(low)
    }

    /// Inserts `item` at `index`, its place in key order; `max` bounds the allocation.
    fn insert(&mut self, index: usize, item: T, max: usize) {
        let key = key_of(&item);
        if self.items.is_empty() {
            self.prefix = key[..key.len().min(NODE_PREFIX_BYTES_MAX)].into();
        } else if !key.starts_with(&self.prefix) {
            self.shorten_prefix(common_prefix_len(key, &self.prefix));
        }
        // A key that starts with the prefix leaves it as it is: the prefix is already as
        // long as the keys held share, or at the cap.
        let hint = hint_at(key, self.prefix.len());
        insert_bounded(&mut self.items, index, item, max);
        self.match_capacity();
        self.hints.insert(index, hint);
    }

    /// Removes and returns the item at `index`.
    fn remove(&mut self, index: usize) -> T {
        let item = self.items.remove(index);
        self.hints.remove(index);
        if index == 0 || index == self.items.len() {
            self.refit();
        }
        item
    }

    /// Replaces the item at `index` with one of the same key (hints do not change).
    fn replace_same_key(&mut self, index: usize, item: T) -> T {
        debug_assert!(key_of(&item) == key_of(&self.items[index]));
        std::mem::replace(&mut self.items[index], item)
    }

    /// Replaces the item at `index` with one of another key that keeps the items in order.
    fn replace(&mut self, index: usize, item: T) -> T {
        let key = key_of(&item);
        if !key.starts_with(&self.prefix) {
            self.shorten_prefix(common_prefix_len(key, &self.prefix));
        }
        self.hints[index] = hint_at(key, self.prefix.len());
        let old = std::mem::replace(&mut self.items[index], item);
        if index == 0 || index + 1 == self.items.len() {
            self.refit();
        }
        old
    }

    /// Splits off the items from `at` on; both halves fit their prefixes to what they hold.
    fn split_off(&mut self, at: usize) -> Keys<T> {
        let mut right = Keys {
            items: self.items.split_off(at),
            prefix: self.prefix.clone(),
            hints: self.hints.split_off(at),
        };
        self.refit();
        right.refit();
        right
    }

    /// Appends `other`, whose keys all come after these. No item is read: the union's common
    /// prefix is the common prefix of the two prefixes.
    fn append(&mut self, mut other: Keys<T>) {
        if other.is_empty() {
            return;
        }
        if self.is_empty() {
            self.prefix = std::mem::take(&mut other.prefix);
            self.items.extend(other.items);
            self.match_capacity();
            self.hints.clear();
            self.hints.extend(other.hints);
            return;
        }
        let to = common_prefix_len(&self.prefix, &other.prefix);
        self.shorten_prefix(to);
        other.shorten_prefix(to);
        self.items.extend(other.items);
        self.match_capacity();
        self.hints.extend(other.hints);
    }

    /// Checks the invariants in the type's documentation.
    fn check(&self, node: NodeAt) -> Result<(), TreeInvariantError> {
        if self.hints.len() != self.items.len() {
            return Err(TreeInvariantError::HintCount {
                node,
                hints: self.hints.len(),
                keys: self.items.len(),
            });
        }
        let fitted = self.fitted_prefix_len();
        if self.prefix.len() != fitted {
            return Err(TreeInvariantError::PrefixNotFitted {
                node,
                kept: self.prefix.len(),
                shared: fitted,
            });
        }
        for (key_index, item) in self.items.iter().enumerate() {
            let key = key_of(item);
            if !key.starts_with(&self.prefix) {
                return Err(TreeInvariantError::KeyOutsidePrefix { node, key_index });
            }
            if self.hints[key_index] != hint_at(key, self.prefix.len()) {
                return Err(TreeInvariantError::HintMismatch { node, key_index });
            }
        }
        Ok(())
    }
}

impl<T: Keyed + Clone> Node<T> {
    /// Items of a leaf or children of a branch: what the capacity bounds.
    fn count(&self) -> usize {
        match self {
            Node::Leaf(items) => items.len(),
            Node::Branch(branch) => branch.children.len(),
        }
    }

    fn capacity(&self) -> usize {
        match self {
            Node::Leaf(_) => LEAF_ITEMS_MAX,
            Node::Branch(_) => BRANCH_CHILDREN_MAX,
        }
    }

    /// The smallest item under this node (`None` only for an empty leaf).
    fn first(&self) -> Option<&T> {
        let mut node = self;
        loop {
            match node {
                Node::Leaf(items) => return items.items.first(),
                Node::Branch(branch) => node = branch.children.first()?,
            }
        }
    }

    /// Inserts `make(the item with key, if any)` at `key`; on overflow splits and returns the
    /// new right sibling with its separator. `make` must return an item with key `key`.
    fn insert_with<F>(&mut self, key: &[u8], make: F) -> (Option<T>, Option<Split<T>>)
    where
        F: FnOnce(Option<&T>) -> T,
    {
        match self {
            Node::Leaf(items) => {
                let position = match items.search(key) {
                    Ok(i) => {
                        let item = make(Some(&items.items[i]));
                        return (Some(items.replace_same_key(i, item)), None);
                    }
                    Err(i) => i,
                };
                let item = make(None);
                debug_assert!(key_of(&item) == key, "make returns an item with the key");
                if items.len() < LEAF_ITEMS_MAX {
                    items.insert(position, item, LEAF_ITEMS_MAX);
                    return (None, None);
                }
                let right = if position == items.len() {
                    // Appending: the left leaf stays full, so keys written in order fill
                    // leaves instead of leaving them half empty.
                    Keys::from_vec(vec![item])
                } else {
                    let half = LEAF_ITEMS_MAX / 2;
                    let mut right = items.split_off(half);
                    if position <= half {
                        items.insert(position, item, LEAF_ITEMS_MAX);
                    } else {
                        right.insert(position - half, item, LEAF_ITEMS_MAX);
                    }
                    right
                };
                let separator = right.items[0].clone();
                (None, Some((separator, Arc::new(Node::Leaf(right)))))
            }
            Node::Branch(branch) => {
                let child = match branch.keys.search(key) {
                    Ok(i) => {
                        // A replacement of the smallest item of child i + 1, which changes no
                        // node's shape; the separator takes the new item so that it does not
                        // keep the old one alive.
                        let (old, split) =
                            Arc::make_mut(&mut branch.children[i + 1]).insert_with(key, make);
                        debug_assert!(split.is_none(), "a replacement never splits");
                        if let Some(first) = branch.children[i + 1].first() {
                            branch.keys.replace_same_key(i, first.clone());
                        }
                        return (old, None);
                    }
                    Err(i) => i,
                };
                let target = Arc::make_mut(&mut branch.children[child]);
                let count_before = target.count();
                let (old, split) = target.insert_with(key, make);
                let Some((separator, right)) = split else {
                    // Only merges below (after a split there) can shrink the child; a child
                    // that grew or stayed needs no look at its neighbours.
                    if branch.children[child].count() < count_before {
                        branch.settle(child);
                    }
                    return (old, None);
                };
                branch.keys.insert(child, separator, BRANCH_CHILDREN_MAX);
                branch.children.insert(child + 1, right);
                let appended = child + 2 == branch.children.len();
                branch.settle(child + 1);
                branch.settle(child);
                (old, branch.split_if_over(appended))
            }
        }
    }

    /// Removes the item with `key`, which the caller checked is present. Returns it.
    fn remove(&mut self, key: &[u8]) -> Option<T> {
        match self {
            Node::Leaf(items) => {
                let i = items.search(key).ok()?;
                Some(items.remove(i))
            }
            Node::Branch(branch) => {
                let child = child_for(&branch.keys, key);
                let removed = Arc::make_mut(&mut branch.children[child]).remove(key);
                branch.settle(child);
                removed
            }
        }
    }

    /// Whether a separator on the path of `key` has that key (read only).
    fn names_separator(&self, key: &[u8]) -> bool {
        let mut node = self;
        while let Node::Branch(branch) = node {
            match branch.keys.search(key) {
                Ok(_) => return true,
                Err(i) => node = &branch.children[i],
            }
        }
        false
    }

    /// After `key` was removed: the separator that still names it (if any) takes the new
    /// smallest item of its right subtree.
    fn refresh_separator(&mut self, key: &[u8]) {
        let Node::Branch(branch) = self else { return };
        match branch.keys.search(key) {
            Ok(i) => {
                if let Some(first) = branch.children[i + 1].first() {
                    let first = first.clone();
                    branch.keys.replace(i, first);
                }
            }
            Err(i) => Arc::make_mut(&mut branch.children[i]).refresh_separator(key),
        }
    }
}

/// The child of a branch with separators `keys` whose range holds `key`.
fn child_for<T: Keyed>(keys: &Keys<T>, key: &[u8]) -> usize {
    match keys.search(key) {
        Ok(i) => i + 1,
        Err(i) => i,
    }
}

/// Inserts into a vector that never needs more than `max` slots, growing its allocation
/// by doubling but never past `max` (a copied node has an exact-size allocation).
fn insert_bounded<T>(items: &mut Vec<T>, index: usize, item: T, max: usize) {
    reserve_bounded(items, 1, max);
    items.insert(index, item);
}

fn reserve_bounded<T>(items: &mut Vec<T>, additional: usize, max: usize) {
    let needed = items.len() + additional;
    if needed > items.capacity() {
        let target = (items.len() * 2).max(4).max(needed).min(max.max(needed));
        items.reserve_exact(target - items.len());
    }
}

impl<T: Keyed + Clone> Branch<T> {
    /// Restores the sibling bounds around child `c` after its count changed: drops it if
    /// empty, merges it with a neighbour while the two fit in one node.
    fn settle(&mut self, mut c: usize) {
        loop {
            if c >= self.children.len() {
                return;
            }
            if self.children[c].count() == 0 {
                self.children.remove(c);
                if self.keys.is_empty() {
                    return;
                }
                self.keys.remove(c.saturating_sub(1));
                // The neighbours that just became adjacent may now fit together.
                c = c.saturating_sub(1);
                continue;
            }
            let capacity = self.children[c].capacity();
            if c > 0 && self.children[c - 1].count() + self.children[c].count() <= capacity {
                self.merge(c - 1);
                c -= 1;
                continue;
            }
            if c + 1 < self.children.len()
                && self.children[c].count() + self.children[c + 1].count() <= capacity
            {
                self.merge(c);
                continue;
            }
            return;
        }
    }

    /// Merges child `c + 1` into child `c`.
    fn merge(&mut self, c: usize) {
        let right = Arc::unwrap_or_clone(self.children.remove(c + 1));
        let separator = self.keys.remove(c);
        match (Arc::make_mut(&mut self.children[c]), right) {
            (Node::Leaf(left), Node::Leaf(right)) => {
                reserve_bounded(&mut left.items, right.len(), LEAF_ITEMS_MAX);
                left.append(right);
            }
            (Node::Branch(left), Node::Branch(right)) => {
                reserve_bounded(
                    &mut left.keys.items,
                    right.keys.len() + 1,
                    BRANCH_CHILDREN_MAX,
                );
                reserve_bounded(
                    &mut left.children,
                    right.children.len(),
                    BRANCH_CHILDREN_MAX,
                );
                let boundary = left.children.len();
                left.keys
                    .insert(left.keys.len(), separator, BRANCH_CHILDREN_MAX);
                left.keys.append(right.keys);
                left.children.extend(right.children);
                // The last child of one and the first of the other are siblings now.
                left.settle(boundary);
            }
            _ => unreachable!(
                "invariant: siblings are at the same depth, so both leaves or both branches"
            ),
        }
    }

    /// Splits off a right sibling if this branch is over capacity. `appended`: the newest
    /// child is the last one, so the left branch stays full, as leaves do.
    fn split_if_over(&mut self, appended: bool) -> Option<Split<T>> {
        if self.children.len() <= BRANCH_CHILDREN_MAX {
            return None;
        }
        let at = if appended {
            BRANCH_CHILDREN_MAX
        } else {
            self.children.len() / 2
        };
        let children = self.children.split_off(at);
        let keys = self.keys.split_off(at);
        // A branch over capacity has `at >= 1` separators left of the split, since `at` is
        // at least half its children.
        let separator = self.keys.remove(self.keys.len() - 1);
        Some((separator, Arc::new(Node::Branch(Branch { keys, children }))))
    }
}

/// A persistent ordered set of [`Keyed`] items; see the module documentation.
pub struct Tree<T: Keyed + Clone> {
    root: Arc<Node<T>>,
    len: usize,
}

impl<T: Keyed + Clone> Clone for Tree<T> {
    /// O(1): the clone shares every node until one side writes to it.
    fn clone(&self) -> Self {
        Tree {
            root: Arc::clone(&self.root),
            len: self.len,
        }
    }
}

impl<T: Keyed + Clone> Default for Tree<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Keyed + Clone> Tree<T> {
    /// An empty tree.
    pub fn new() -> Self {
        Tree {
            root: Arc::new(Node::Leaf(Keys::new())),
            len: 0,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree holds no items.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The item with `key`, if any.
    pub fn get(&self, key: &T::Key) -> Option<&T> {
        let key = key.as_ref();
        let mut node = &*self.root;
        loop {
            match node {
                Node::Leaf(items) => return items.search(key).ok().map(|i| &items.items[i]),
                Node::Branch(branch) => node = &branch.children[child_for(&branch.keys, key)],
            }
        }
    }

    /// Inserts `item`, replacing and returning the item with an equal key, if any.
    pub fn insert(&mut self, item: T) -> Option<T> {
        // The key must outlive the move of `item` into the tree: hold it through a clone.
        let key_holder = item.clone();
        self.insert_with(key_holder.key(), move |_| item)
    }

    /// Inserts the item `make` builds from the one now at `key` (if any), in one descent, and
    /// returns the replaced item. `make` must return an item whose key is `key`.
    pub(crate) fn insert_with<F>(&mut self, key: &T::Key, make: F) -> Option<T>
    where
        F: FnOnce(Option<&T>) -> T,
    {
        let (old, split) = Arc::make_mut(&mut self.root).insert_with(key.as_ref(), make);
        if let Some((separator, right)) = split {
            let left = std::mem::replace(&mut self.root, Arc::new(Node::Leaf(Keys::new())));
            self.root = Arc::new(Node::Branch(Branch {
                keys: Keys::from_vec(vec![separator]),
                children: vec![left, right],
            }));
        }
        self.shrink_root();
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes and returns the item with `key`, if any. A missing key copies no node.
    pub fn remove(&mut self, key: &T::Key) -> Option<T> {
        self.get(key)?;
        let key = key.as_ref();
        let removed = Arc::make_mut(&mut self.root).remove(key);
        debug_assert!(removed.is_some(), "get found the key");
        if self.root.names_separator(key) {
            Arc::make_mut(&mut self.root).refresh_separator(key);
        }
        self.shrink_root();
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// A root branch left with one child (or none) gives way to what is below it. Both
    /// inserts (a split followed by merges) and removals can leave one.
    fn shrink_root(&mut self) {
        loop {
            let replacement = match &*self.root {
                Node::Branch(branch) if branch.children.len() == 1 => {
                    Arc::clone(&branch.children[0])
                }
                Node::Branch(branch) if branch.children.is_empty() => {
                    Arc::new(Node::Leaf(Keys::new()))
                }
                _ => break,
            };
            self.root = replacement;
        }
    }

    /// The items with keys at or after `start` (per the bound), in ascending key order.
    pub fn range<'a>(&'a self, start: Bound<&T::Key>) -> Iter<'a, T> {
        let mut iter = Iter {
            branches: Vec::with_capacity(ITER_STACK_DEPTH),
            leaf: &[],
            position: 0,
        };
        let mut node = &*self.root;
        loop {
            match node {
                Node::Branch(branch) => {
                    let child = match start {
                        Bound::Unbounded => 0,
                        Bound::Included(key) | Bound::Excluded(key) => {
                            child_for(&branch.keys, key.as_ref())
                        }
                    };
                    iter.branches.push((&branch.children, child + 1));
                    node = &branch.children[child];
                }
                Node::Leaf(items) => {
                    iter.leaf = &items.items;
                    iter.position = match start {
                        Bound::Unbounded => 0,
                        Bound::Included(key) => match items.search(key.as_ref()) {
                            Ok(i) | Err(i) => i,
                        },
                        Bound::Excluded(key) => match items.search(key.as_ref()) {
                            Ok(i) => i + 1,
                            Err(i) => i,
                        },
                    };
                    return iter;
                }
            }
        }
    }

    /// Every item, in ascending key order.
    pub fn iter(&self) -> Iter<'_, T> {
        self.range(Bound::Unbounded)
    }

    /// Builds a tree from items in strictly increasing key order in one pass (O(n)): every
    /// leaf and branch is full except the last of each level.
    pub fn from_sorted(items: impl IntoIterator<Item = T>) -> Result<Self, NotSorted> {
        // Each level is a list of (smallest item, node).
        let mut level: Vec<(T, Arc<Node<T>>)> = Vec::new();
        let mut leaf: Vec<T> = Vec::with_capacity(LEAF_ITEMS_MAX);
        let mut len = 0usize;
        for item in items {
            let previous = leaf
                .last()
                .or_else(|| match level.last().map(|(_, node)| &**node) {
                    Some(Node::Leaf(full)) => full.items.last(),
                    _ => None,
                });
            if previous.is_some_and(|previous| key_of(previous) >= key_of(&item)) {
                return Err(NotSorted {
                    position: len as u64,
                });
            }
            len += 1;
            leaf.push(item);
            if leaf.len() == LEAF_ITEMS_MAX {
                let full = std::mem::replace(&mut leaf, Vec::with_capacity(LEAF_ITEMS_MAX));
                level.push((full[0].clone(), Arc::new(Node::Leaf(Keys::from_vec(full)))));
            }
        }
        if !leaf.is_empty() {
            leaf.shrink_to_fit();
            level.push((leaf[0].clone(), Arc::new(Node::Leaf(Keys::from_vec(leaf)))));
        }
        if level.is_empty() {
            return Ok(Tree::new());
        }
        while level.len() > 1 {
            let mut above = Vec::with_capacity(level.len().div_ceil(BRANCH_CHILDREN_MAX));
            let mut nodes = level.into_iter().peekable();
            while nodes.peek().is_some() {
                let mut keys = Vec::with_capacity(BRANCH_CHILDREN_MAX - 1);
                let mut children = Vec::with_capacity(BRANCH_CHILDREN_MAX);
                let mut first = None;
                for (smallest, node) in nodes.by_ref().take(BRANCH_CHILDREN_MAX) {
                    if first.is_none() {
                        first = Some(smallest);
                    } else {
                        keys.push(smallest);
                    }
                    children.push(node);
                }
                let first = first.expect("invariant: the loop runs while nodes remain");
                let keys = Keys::from_vec(keys);
                above.push((first, Arc::new(Node::Branch(Branch { keys, children }))));
            }
            level = above;
        }
        let (_, root) = level
            .pop()
            .expect("invariant: the loop above leaves exactly one node");
        Ok(Tree { root, len })
    }

    /// Checks every invariant in the module documentation; the error says which and where.
    pub fn check_invariants(&self) -> Result<(), TreeInvariantError> {
        let mut checker = Checker {
            previous: None,
            count: 0,
            leaf_depth: None,
        };
        if let Node::Branch(branch) = &*self.root
            && branch.children.len() < 2
        {
            return Err(TreeInvariantError::RootBranchTooSmall {
                children: branch.children.len(),
            });
        }
        checker.node(&self.root, 0, true)?;
        if checker.count != self.len {
            return Err(TreeInvariantError::LenMismatch {
                len: self.len,
                held: checker.count,
            });
        }
        Ok(())
    }
}

/// Where in a [`Tree`] a broken invariant was found: a leaf or a branch, at a depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAt {
    /// Whether the node is a branch (else a leaf).
    pub branch: bool,
    /// Its depth; the root is at 0.
    pub depth: usize,
}

impl std::fmt::Display for NodeAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.branch { "branch" } else { "leaf" };
        write!(f, "{kind} at depth {}", self.depth)
    }
}

/// One broken invariant of a [`Tree`] (listed in the module documentation), with where it
/// was found. Always a bug in the tree, never bad input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TreeInvariantError {
    /// The root is a branch with fewer than two children.
    #[error("root branch has {children} children, expected at least 2")]
    RootBranchTooSmall {
        /// Its children.
        children: usize,
    },
    /// `len` disagrees with the items held.
    #[error("len says {len} items, the tree holds {held}")]
    LenMismatch {
        /// The count kept.
        len: usize,
        /// The items found.
        held: usize,
    },
    /// A node holds more entries than its capacity.
    #[error("node at depth {depth} holds {count}, over its capacity {capacity}")]
    OverCapacity {
        /// Its depth.
        depth: usize,
        /// Its items or children.
        count: usize,
        /// Its capacity.
        capacity: usize,
    },
    /// A node other than the root is empty.
    #[error("empty non-root node at depth {depth}")]
    EmptyNonRoot {
        /// Its depth.
        depth: usize,
    },
    /// Two leaves lie at different depths.
    #[error("leaf at depth {depth}, another at depth {first}")]
    LeavesAtDifferentDepths {
        /// This leaf's depth.
        depth: usize,
        /// The depth of the first leaf found.
        first: usize,
    },
    /// An item's key is not strictly after the one before it.
    #[error("item {position} is not after the one before it")]
    ItemsOutOfOrder {
        /// The item's position in the whole tree.
        position: usize,
    },
    /// A branch does not have one more child than separators.
    #[error("branch at depth {depth} has {separators} separators for {children} children")]
    SeparatorCount {
        /// Its depth.
        depth: usize,
        /// Its separators.
        separators: usize,
        /// Its children.
        children: usize,
    },
    /// A separator is not the smallest key of the child on its right.
    #[error(
        "separator {separator} at depth {depth} is not the smallest key of the child on its right"
    )]
    SeparatorNotSmallestKey {
        /// The separator's position.
        separator: usize,
        /// The branch's depth.
        depth: usize,
    },
    /// Two neighbouring children fit in one node: they should have been merged.
    #[error(
        "children {left} and {right} at depth {depth} hold {held} together: they should have been merged"
    )]
    ChildrenNotMerged {
        /// The left child's position.
        left: usize,
        /// The right child's position.
        right: usize,
        /// The children's depth.
        depth: usize,
        /// What they hold together.
        held: usize,
    },
    /// A node has not one search hint per key.
    #[error("{node} has {hints} hints for {keys} keys")]
    HintCount {
        /// The node.
        node: NodeAt,
        /// Its hints.
        hints: usize,
        /// Its keys.
        keys: usize,
    },
    /// A node's prefix is not the (capped) common prefix of its keys.
    #[error("{node} keeps a prefix of {kept} bytes, its keys share {shared} (capped)")]
    PrefixNotFitted {
        /// The node.
        node: NodeAt,
        /// The prefix's length.
        kept: usize,
        /// The length its keys share, capped.
        shared: usize,
    },
    /// A key does not start with its node's prefix.
    #[error("{node}: key {key_index} does not start with the prefix")]
    KeyOutsidePrefix {
        /// The node.
        node: NodeAt,
        /// The key's position in the node.
        key_index: usize,
    },
    /// A hint is not its key's bytes after the prefix.
    #[error("{node}: hint {key_index} is not the key's bytes after the prefix")]
    HintMismatch {
        /// The node.
        node: NodeAt,
        /// The key's position in the node.
        key_index: usize,
    },
}

struct Checker<'a, T> {
    previous: Option<&'a T>,
    count: usize,
    leaf_depth: Option<usize>,
}

impl<'a, T: Keyed + Clone> Checker<'a, T> {
    fn node(
        &mut self,
        node: &'a Node<T>,
        depth: usize,
        root: bool,
    ) -> Result<(), TreeInvariantError> {
        let count = node.count();
        if count > node.capacity() {
            return Err(TreeInvariantError::OverCapacity {
                depth,
                count,
                capacity: node.capacity(),
            });
        }
        if !root && count == 0 {
            return Err(TreeInvariantError::EmptyNonRoot { depth });
        }
        match node {
            Node::Leaf(items) => {
                let first = *self.leaf_depth.get_or_insert(depth);
                if first != depth {
                    return Err(TreeInvariantError::LeavesAtDifferentDepths { depth, first });
                }
                items.check(NodeAt {
                    branch: false,
                    depth,
                })?;
                for item in &items.items {
                    if let Some(previous) = self.previous
                        && key_of(previous) >= key_of(item)
                    {
                        return Err(TreeInvariantError::ItemsOutOfOrder {
                            position: self.count,
                        });
                    }
                    self.previous = Some(item);
                    self.count += 1;
                }
            }
            Node::Branch(branch) => {
                if branch.keys.len() + 1 != branch.children.len() {
                    return Err(TreeInvariantError::SeparatorCount {
                        depth,
                        separators: branch.keys.len(),
                        children: branch.children.len(),
                    });
                }
                branch.keys.check(NodeAt {
                    branch: true,
                    depth,
                })?;
                for (i, child) in branch.children.iter().enumerate() {
                    if i > 0 {
                        let separator = key_of(&branch.keys.items[i - 1]);
                        if child.first().map(key_of) != Some(separator) {
                            return Err(TreeInvariantError::SeparatorNotSmallestKey {
                                separator: i - 1,
                                depth,
                            });
                        }
                        let pair = branch.children[i - 1].count() + child.count();
                        if pair <= child.capacity() {
                            return Err(TreeInvariantError::ChildrenNotMerged {
                                left: i - 1,
                                right: i,
                                depth: depth + 1,
                                held: pair,
                            });
                        }
                    }
                    self.node(child, depth + 1, false)?;
                }
            }
        }
        Ok(())
    }
}

/// Ascending iterator over a [`Tree`]: a stack of branch positions and the current leaf; it
/// allocates once, when created.
pub struct Iter<'a, T> {
    /// Per branch level, its children and the index of the next child to visit.
    branches: Vec<(&'a [Arc<Node<T>>], usize)>,
    leaf: &'a [T],
    position: usize,
}

impl<'a, T> Iterator for Iter<'a, T> {
    type Item = &'a T;

    fn next(&mut self) -> Option<&'a T> {
        loop {
            if let Some(item) = self.leaf.get(self.position) {
                self.position += 1;
                return Some(item);
            }
            // Climb to the nearest branch with a child left, then down its leftmost path.
            let (children, next) = loop {
                let (children, next) = self.branches.last_mut()?;
                if *next < children.len() {
                    let found = (*children, *next);
                    *next += 1;
                    break found;
                }
                self.branches.pop();
            };
            let mut node: &'a Node<T> = &children[next];
            loop {
                match node {
                    Node::Leaf(items) => {
                        self.leaf = &items.items;
                        self.position = 0;
                        break;
                    }
                    Node::Branch(branch) => {
                        self.branches.push((&branch.children, 1));
                        node = &branch.children[0];
                    }
                }
            }
        }
    }
}

impl<T: Keyed + Clone + PartialEq> PartialEq for Tree<T> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && (Arc::ptr_eq(&self.root, &other.root) || self.iter().eq(other.iter()))
    }
}

impl<T: Keyed + Clone + Eq> Eq for Tree<T> {}

impl<T: Keyed + Clone + fmt::Debug> fmt::Debug for Tree<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// A test item: key bytes and a payload to tell versions of a key apart.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item(Vec<u8>, u32);

    impl Keyed for Item {
        type Key = [u8];
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    /// An item keyed by a number: its big-endian bytes, so that byte order is number order.
    fn item(k: u16, v: u32) -> Item {
        Item(k.to_be_bytes().to_vec(), v)
    }

    fn be(k: u16) -> [u8; 2] {
        k.to_be_bytes()
    }

    /// The number an item made by [`item`] is keyed by.
    fn number(item: &Item) -> u16 {
        u16::from_be_bytes([item.0[0], item.0[1]])
    }

    fn keys(tree: &Tree<Item>) -> Vec<u16> {
        tree.iter().map(number).collect()
    }

    fn depth(tree: &Tree<Item>) -> usize {
        let mut depth = 1;
        let mut node = &*tree.root;
        while let Node::Branch(branch) = node {
            depth += 1;
            node = &branch.children[0];
        }
        depth
    }

    fn leaf_sizes(tree: &Tree<Item>) -> Vec<usize> {
        fn walk(node: &Node<Item>, out: &mut Vec<usize>) {
            match node {
                Node::Leaf(items) => out.push(items.len()),
                Node::Branch(branch) => branch.children.iter().for_each(|c| walk(c, out)),
            }
        }
        let mut out = Vec::new();
        walk(&tree.root, &mut out);
        out
    }

    #[test]
    fn an_empty_tree_has_nothing_and_holds_its_invariants() {
        let mut tree: Tree<Item> = Tree::new();
        assert!(tree.is_empty());
        assert_eq!(tree.get(&be(1)), None);
        assert_eq!(tree.remove(&be(1)), None);
        assert_eq!(tree.iter().count(), 0);
        assert_eq!(tree.range(Bound::Included(&be(5)[..])).count(), 0);
        tree.check_invariants().expect("empty tree is valid");
    }

    #[test]
    fn appending_in_order_fills_every_leaf_but_the_last() {
        // Given keys inserted in increasing order
        let mut tree = Tree::new();
        for k in 0..100u16 {
            assert_eq!(tree.insert(item(k, 0)), None);
            tree.check_invariants().expect("invariants hold");
        }
        // Then every leaf but the last is full
        let sizes = leaf_sizes(&tree);
        let (last, full) = sizes.split_last().expect("some leaves");
        assert!(full.iter().all(|&n| n == LEAF_ITEMS_MAX), "{sizes:?}");
        assert!(*last >= 1);
        assert_eq!(keys(&tree), (0..100).collect::<Vec<_>>());
        assert!(depth(&tree) > 2, "the test reaches a deep tree");
    }

    #[test]
    fn appending_at_the_end_of_a_full_inner_leaf_keeps_it_full() {
        // Given two runs of keys, 0.. and 1000.., each appended in order
        let mut tree = Tree::new();
        for k in 0..10u16 {
            tree.insert(item(1000 + k, 0));
        }
        for k in 0..40u16 {
            tree.insert(item(k, 0));
            tree.check_invariants().expect("invariants hold");
        }
        // Then the leaves holding the first run are full up to its last one
        let sizes = leaf_sizes(&tree);
        let first_run_leaves = 40 / LEAF_ITEMS_MAX;
        assert!(
            sizes[..first_run_leaves - 1]
                .iter()
                .all(|&n| n == LEAF_ITEMS_MAX),
            "{sizes:?}"
        );
    }

    #[test]
    fn insert_replaces_an_equal_key_and_returns_the_old_item() {
        let mut tree = Tree::new();
        for k in 0..50u16 {
            tree.insert(item(k, 0));
        }
        // Replacing every key, separators included, keeps len and invariants
        for k in 0..50u16 {
            assert_eq!(tree.insert(item(k, 1)), Some(item(k, 0)));
        }
        assert_eq!(tree.len(), 50);
        assert!(tree.iter().all(|item| item.1 == 1));
        tree.check_invariants().expect("invariants hold");
        // And no separator still holds an old item
        fn separators_new(node: &Node<Item>) -> bool {
            match node {
                Node::Leaf(_) => true,
                Node::Branch(b) => {
                    b.keys.items.iter().all(|k| k.1 == 1)
                        && b.children.iter().all(|c| separators_new(c))
                }
            }
        }
        assert!(separators_new(&tree.root));
    }

    #[test]
    fn removing_everything_in_any_order_shrinks_back_to_an_empty_leaf() {
        for order in [0u16, 1, 2] {
            let mut tree = Tree::new();
            for k in 0..200u16 {
                tree.insert(item(k, 0));
            }
            let mut doomed: Vec<u16> = (0..200).collect();
            match order {
                0 => {}
                1 => doomed.reverse(),
                _ => doomed.sort_by_key(|k| (k % 7, *k)),
            }
            for (i, k) in doomed.iter().enumerate() {
                assert_eq!(tree.remove(&be(*k)), Some(item(*k, 0)));
                assert_eq!(tree.len(), 199 - i);
                tree.check_invariants().expect("invariants hold");
            }
            assert_eq!(depth(&tree), 1);
            assert!(tree.is_empty());
        }
    }

    #[test]
    fn ranges_start_at_the_bound() {
        let tree = Tree::from_sorted((0..100u16).map(|k| item(k * 2, 0))).expect("sorted");
        let from = |b: Bound<u16>| {
            let b = b.map(be);
            let b = b.as_ref().map(|k| &k[..]);
            tree.range(b).map(number).take(3).collect::<Vec<_>>()
        };
        assert_eq!(from(Bound::Included(10)), vec![10, 12, 14]);
        assert_eq!(from(Bound::Excluded(10)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Included(11)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Excluded(11)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Unbounded), vec![0, 2, 4]);
        assert_eq!(from(Bound::Included(198)), vec![198]);
        assert_eq!(from(Bound::Excluded(198)), Vec::<u16>::new());
        assert_eq!(from(Bound::Included(500)), Vec::<u16>::new());
    }

    #[test]
    fn from_sorted_builds_full_leaves_and_refuses_disorder() {
        for n in [0u16, 1, 3, 4, 5, 16, 17, 100, 1000] {
            let tree = Tree::from_sorted((0..n).map(|k| item(k, 0))).expect("sorted");
            tree.check_invariants()
                .unwrap_or_else(|e| panic!("n = {n}: {e}"));
            assert_eq!(keys(&tree), (0..n).collect::<Vec<_>>());
            let sizes = leaf_sizes(&tree);
            assert!(
                sizes[..sizes.len() - 1]
                    .iter()
                    .all(|&s| s == LEAF_ITEMS_MAX),
                "n = {n}: {sizes:?}"
            );
        }
        let refused = Tree::from_sorted([item(1, 0), item(3, 0), item(3, 0)]);
        assert_eq!(refused.err(), Some(NotSorted { position: 2 }));
        let refused = Tree::from_sorted([item(5, 0), item(4, 0)]);
        assert_eq!(refused.err(), Some(NotSorted { position: 1 }));
    }

    #[test]
    fn a_clone_does_not_see_later_writes_and_shares_untouched_nodes() {
        // Given a tree and a clone of it
        let mut tree = Tree::from_sorted((0..300u16).map(|k| item(k, 0))).expect("sorted");
        let view = tree.clone();
        assert!(Arc::ptr_eq(&tree.root, &view.root));
        // When the tree is written
        tree.insert(item(5, 9));
        tree.remove(&be(7));
        tree.insert(item(1000, 0));
        // Then the clone is unchanged
        assert_eq!(keys(&view), (0..300).collect::<Vec<_>>());
        assert!(view.iter().all(|i| i.1 == 0));
        view.check_invariants().expect("view is valid");
        tree.check_invariants().expect("tree is valid");
        // and the two still share the subtrees the writes did not touch
        let (Node::Branch(a), Node::Branch(b)) = (&*tree.root, &*view.root) else {
            panic!("300 items make a branch root");
        };
        let last = a.children.len() - 1;
        assert!(Arc::ptr_eq(&a.children[1], &b.children[1]) || last == 1);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(Vec<u8>, u32),
        Remove(Vec<u8>),
        Range(Vec<u8>, bool),
        Snapshot,
    }

    /// Operations on number keys (big-endian `u16`).
    fn number_op() -> impl Strategy<Value = Op> {
        let key = |range: std::ops::Range<u16>| range.prop_map(|k| be(k).to_vec());
        // A small key space so that inserts, replacements and removals collide.
        prop_oneof![
            5 => (key(0..300), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            // Runs of appends past the largest key.
            2 => (key(300..400), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => key(0..400).prop_map(Op::Remove),
            1 => (key(0..400), any::<bool>()).prop_map(|(k, inclusive)| Op::Range(k, inclusive)),
            1 => Just(Op::Snapshot),
        ]
    }

    /// Variable-length byte keys: a few shared prefixes, some longer than
    /// [`NODE_PREFIX_BYTES_MAX`] and than that plus a hint, then a short tail over bytes that
    /// make keys prefixes of each other and ties of zero-padded hints (`0`, `1`, `0xff`).
    fn byte_key() -> impl Strategy<Value = Vec<u8>> {
        const PREFIXES: [&[u8]; 5] = [
            b"",
            b"/r",
            b"/registry/pods/",
            b"/registry/pods/default/nginx-5c689d88bb-",
            b"/registry/pods/default/nginx-5c689d88bb-x",
        ];
        (
            0..PREFIXES.len(),
            proptest::collection::vec(
                prop_oneof![Just(0u8), Just(1), Just(b'a'), Just(0xff)],
                0..4,
            ),
        )
            .prop_map(|(p, tail)| [PREFIXES[p], &tail].concat())
    }

    fn byte_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (byte_key(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => byte_key().prop_map(Op::Remove),
            1 => (byte_key(), any::<bool>()).prop_map(|(k, inclusive)| Op::Range(k, inclusive)),
            1 => Just(Op::Snapshot),
        ]
    }

    /// What the tree should hold: key bytes to payload.
    type Model = BTreeMap<Vec<u8>, u32>;

    /// Runs `ops` on a tree built from `initial` and on a `BTreeMap`: the tree answers like
    /// the map after every step (for `probes` too), and every clone taken on the way still
    /// holds exactly what the map held at that moment.
    fn matches_model(
        initial: Model,
        ops: Vec<Op>,
        probes: &[Vec<u8>],
    ) -> Result<(), TestCaseError> {
        let mut model = initial;
        let mut tree =
            Tree::from_sorted(model.iter().map(|(k, &v)| Item(k.clone(), v))).expect("sorted");
        let mut frozen: Vec<(Tree<Item>, Model)> = Vec::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => {
                    let old = tree.insert(Item(k.clone(), v)).map(|i| i.1);
                    prop_assert_eq!(old, model.insert(k, v));
                }
                Op::Remove(k) => {
                    let old = tree.remove(&k).map(|i| i.1);
                    prop_assert_eq!(old, model.remove(&k));
                }
                Op::Range(k, inclusive) => {
                    let bound = if inclusive {
                        Bound::Included(&k[..])
                    } else {
                        Bound::Excluded(&k[..])
                    };
                    let got: Vec<(Vec<u8>, u32)> =
                        tree.range(bound).map(|i| (i.0.clone(), i.1)).collect();
                    let want: Vec<(Vec<u8>, u32)> = model
                        .range::<[u8], _>((bound, Bound::Unbounded))
                        .map(|(k, &v)| (k.clone(), v))
                        .collect();
                    prop_assert_eq!(got, want);
                }
                Op::Snapshot => frozen.push((tree.clone(), model.clone())),
            }
            tree.check_invariants()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(tree.len(), model.len());
            for k in probes {
                prop_assert_eq!(tree.get(k).map(|i| i.1), model.get(k).copied());
            }
        }
        let all: Vec<(Vec<u8>, u32)> = tree.iter().map(|i| (i.0.clone(), i.1)).collect();
        prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
        for (clone, expected) in frozen {
            clone
                .check_invariants()
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let got: Vec<(Vec<u8>, u32)> = clone.iter().map(|i| (i.0.clone(), i.1)).collect();
            prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Number keys: the tree answers like a `BTreeMap` and clones stay frozen.
        #[test]
        fn tree_matches_btreemap_and_clones_stay_frozen(
            initial in 0u16..200,
            ops in proptest::collection::vec(number_op(), 1..400),
        ) {
            let model = (0..initial).map(|k| (be(k * 2).to_vec(), 0)).collect();
            let probes: Vec<Vec<u8>> = [0u16, 1, 150, 299, 350].map(|k| be(k).to_vec()).into();
            matches_model(model, ops, &probes)?;
        }

        /// Variable-length keys with long shared prefixes, keys that are prefixes of each
        /// other and hints that tie: the same as with number keys.
        #[test]
        fn tree_matches_btreemap_with_long_shared_prefixes(
            initial in proptest::collection::btree_map(byte_key(), any::<u32>(), 0..80),
            ops in proptest::collection::vec(byte_op(), 1..400),
            probes in proptest::collection::vec(byte_key(), 4),
        ) {
            matches_model(initial, ops, &probes)?;
        }
    }
}
