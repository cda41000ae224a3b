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
//!   only ever needs to merge, never to borrow.

use std::cmp::Ordering;
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;

/// An item that carries its own key.
pub trait Keyed {
    /// The key type; items are ordered by it.
    type Key: Ord + ?Sized;
    /// The item's key.
    fn key(&self) -> &Self::Key;
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
    Leaf(Vec<T>),
    Branch(Branch<T>),
}

#[derive(Clone)]
struct Branch<T> {
    /// `keys[i]` is a clone of the smallest item under `children[i + 1]`.
    keys: Vec<T>,
    children: Vec<Arc<Node<T>>>,
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
                Node::Leaf(items) => return items.first(),
                Node::Branch(branch) => node = branch.children.first()?,
            }
        }
    }

    /// Inserts `make(the item with key, if any)` at `key`; on overflow splits and returns the
    /// new right sibling with its separator. `make` must return an item with key `key`.
    fn insert_with<F>(&mut self, key: &T::Key, make: F) -> (Option<T>, Option<Split<T>>)
    where
        F: FnOnce(Option<&T>) -> T,
    {
        match self {
            Node::Leaf(items) => {
                let position = match items.binary_search_by(|probe| probe.key().cmp(key)) {
                    Ok(i) => {
                        let item = make(Some(&items[i]));
                        return (Some(std::mem::replace(&mut items[i], item)), None);
                    }
                    Err(i) => i,
                };
                let item = make(None);
                debug_assert!(item.key() == key, "make returns an item with the key");
                if items.len() < LEAF_ITEMS_MAX {
                    insert_bounded(items, position, item, LEAF_ITEMS_MAX);
                    return (None, None);
                }
                let right = if position == items.len() {
                    // Appending: the left leaf stays full, so keys written in order fill
                    // leaves instead of leaving them half empty.
                    vec![item]
                } else {
                    let half = LEAF_ITEMS_MAX / 2;
                    let mut right = items.split_off(half);
                    if position <= half {
                        insert_bounded(items, position, item, LEAF_ITEMS_MAX);
                    } else {
                        insert_bounded(&mut right, position - half, item, LEAF_ITEMS_MAX);
                    }
                    right
                };
                let separator = right[0].clone();
                (None, Some((separator, Arc::new(Node::Leaf(right)))))
            }
            Node::Branch(branch) => {
                let child = match branch.keys.binary_search_by(|probe| probe.key().cmp(key)) {
                    Ok(i) => {
                        // A replacement of the smallest item of child i + 1, which changes no
                        // node's shape; the separator takes the new item so that it does not
                        // keep the old one alive.
                        let (old, split) =
                            Arc::make_mut(&mut branch.children[i + 1]).insert_with(key, make);
                        debug_assert!(split.is_none(), "a replacement never splits");
                        if let Some(first) = branch.children[i + 1].first() {
                            branch.keys[i] = first.clone();
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
                branch.keys.insert(child, separator);
                branch.children.insert(child + 1, right);
                let appended = child + 2 == branch.children.len();
                branch.settle(child + 1);
                branch.settle(child);
                (old, branch.split_if_over(appended))
            }
        }
    }

    /// Removes the item with `key`, which the caller checked is present. Returns it.
    fn remove(&mut self, key: &T::Key) -> Option<T> {
        match self {
            Node::Leaf(items) => {
                let i = items.binary_search_by(|probe| probe.key().cmp(key)).ok()?;
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
    fn names_separator(&self, key: &T::Key) -> bool {
        let mut node = self;
        while let Node::Branch(branch) = node {
            match branch.keys.binary_search_by(|probe| probe.key().cmp(key)) {
                Ok(_) => return true,
                Err(i) => node = &branch.children[i],
            }
        }
        false
    }

    /// After `key` was removed: the separator that still names it (if any) takes the new
    /// smallest item of its right subtree.
    fn refresh_separator(&mut self, key: &T::Key) {
        let Node::Branch(branch) = self else { return };
        match branch.keys.binary_search_by(|probe| probe.key().cmp(key)) {
            Ok(i) => {
                if let Some(first) = branch.children[i + 1].first() {
                    branch.keys[i] = first.clone();
                }
            }
            Err(i) => Arc::make_mut(&mut branch.children[i]).refresh_separator(key),
        }
    }
}

/// The child of a branch with separators `keys` whose range holds `key`.
fn child_for<T: Keyed>(keys: &[T], key: &T::Key) -> usize {
    match keys.binary_search_by(|probe| probe.key().cmp(key)) {
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
                reserve_bounded(left, right.len(), LEAF_ITEMS_MAX);
                left.extend(right);
            }
            (Node::Branch(left), Node::Branch(right)) => {
                reserve_bounded(&mut left.keys, right.keys.len() + 1, BRANCH_CHILDREN_MAX);
                reserve_bounded(
                    &mut left.children,
                    right.children.len(),
                    BRANCH_CHILDREN_MAX,
                );
                let boundary = left.children.len();
                left.keys.push(separator);
                left.keys.extend(right.keys);
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
        let separator = self
            .keys
            .pop()
            .expect("invariant: a branch over capacity has separators left of the split");
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
            root: Arc::new(Node::Leaf(Vec::new())),
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
        let mut node = &*self.root;
        loop {
            match node {
                Node::Leaf(items) => {
                    return items
                        .binary_search_by(|probe| probe.key().cmp(key))
                        .ok()
                        .map(|i| &items[i]);
                }
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
        let (old, split) = Arc::make_mut(&mut self.root).insert_with(key, make);
        if let Some((separator, right)) = split {
            let left = std::mem::replace(&mut self.root, Arc::new(Node::Leaf(Vec::new())));
            self.root = Arc::new(Node::Branch(Branch {
                keys: vec![separator],
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
                    Arc::new(Node::Leaf(Vec::new()))
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
                        Bound::Included(key) | Bound::Excluded(key) => child_for(&branch.keys, key),
                    };
                    iter.branches.push((&branch.children, child + 1));
                    node = &branch.children[child];
                }
                Node::Leaf(items) => {
                    iter.leaf = items;
                    iter.position = match start {
                        Bound::Unbounded => 0,
                        Bound::Included(key) => items.partition_point(|item| item.key() < key),
                        Bound::Excluded(key) => items.partition_point(|item| item.key() <= key),
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
                    Some(Node::Leaf(full)) => full.last(),
                    _ => None,
                });
            if previous.is_some_and(|previous| previous.key().cmp(item.key()) != Ordering::Less) {
                return Err(NotSorted {
                    position: len as u64,
                });
            }
            len += 1;
            leaf.push(item);
            if leaf.len() == LEAF_ITEMS_MAX {
                let full = std::mem::replace(&mut leaf, Vec::with_capacity(LEAF_ITEMS_MAX));
                level.push((full[0].clone(), Arc::new(Node::Leaf(full))));
            }
        }
        if !leaf.is_empty() {
            leaf.shrink_to_fit();
            level.push((leaf[0].clone(), Arc::new(Node::Leaf(leaf))));
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
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut checker = Checker {
            previous: None,
            count: 0,
            leaf_depth: None,
        };
        if let Node::Branch(branch) = &*self.root
            && branch.children.len() < 2
        {
            return Err(format!(
                "root branch has {} children, expected at least 2",
                branch.children.len()
            ));
        }
        checker.node(&self.root, 0, true)?;
        if checker.count != self.len {
            return Err(format!(
                "len says {} items, the tree holds {}",
                self.len, checker.count
            ));
        }
        Ok(())
    }
}

struct Checker<'a, T> {
    previous: Option<&'a T>,
    count: usize,
    leaf_depth: Option<usize>,
}

impl<'a, T: Keyed + Clone> Checker<'a, T> {
    fn node(&mut self, node: &'a Node<T>, depth: usize, root: bool) -> Result<(), String> {
        let count = node.count();
        if count > node.capacity() {
            return Err(format!(
                "node at depth {depth} holds {count}, over its capacity {}",
                node.capacity()
            ));
        }
        if !root && count == 0 {
            return Err(format!("empty non-root node at depth {depth}"));
        }
        match node {
            Node::Leaf(items) => {
                if *self.leaf_depth.get_or_insert(depth) != depth {
                    return Err(format!(
                        "leaf at depth {depth}, another at depth {:?}",
                        self.leaf_depth
                    ));
                }
                for item in items {
                    if let Some(previous) = self.previous
                        && previous.key() >= item.key()
                    {
                        return Err(format!(
                            "item {} is not after the one before it",
                            self.count
                        ));
                    }
                    self.previous = Some(item);
                    self.count += 1;
                }
            }
            Node::Branch(branch) => {
                if branch.keys.len() + 1 != branch.children.len() {
                    return Err(format!(
                        "branch at depth {depth} has {} separators for {} children",
                        branch.keys.len(),
                        branch.children.len()
                    ));
                }
                for (i, child) in branch.children.iter().enumerate() {
                    if i > 0 {
                        let separator = branch.keys[i - 1].key();
                        if child.first().map(Keyed::key) != Some(separator) {
                            return Err(format!(
                                "separator {} at depth {depth} is not the smallest key of the child on its right",
                                i - 1
                            ));
                        }
                        let pair = branch.children[i - 1].count() + child.count();
                        if pair <= child.capacity() {
                            return Err(format!(
                                "children {} and {i} at depth {} hold {pair} together: they should have been merged",
                                i - 1,
                                depth + 1
                            ));
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
                        self.leaf = items;
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

    /// A test item: key and a payload to tell versions of a key apart.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Item(u16, u32);

    impl Keyed for Item {
        type Key = u16;
        fn key(&self) -> &u16 {
            &self.0
        }
    }

    fn keys(tree: &Tree<Item>) -> Vec<u16> {
        tree.iter().map(|item| item.0).collect()
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
        assert_eq!(tree.get(&1), None);
        assert_eq!(tree.remove(&1), None);
        assert_eq!(tree.iter().count(), 0);
        assert_eq!(tree.range(Bound::Included(&5)).count(), 0);
        tree.check_invariants().expect("empty tree is valid");
    }

    #[test]
    fn appending_in_order_fills_every_leaf_but_the_last() {
        // Given keys inserted in increasing order
        let mut tree = Tree::new();
        for k in 0..100u16 {
            assert_eq!(tree.insert(Item(k, 0)), None);
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
            tree.insert(Item(1000 + k, 0));
        }
        for k in 0..40u16 {
            tree.insert(Item(k, 0));
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
            tree.insert(Item(k, 0));
        }
        // Replacing every key, separators included, keeps len and invariants
        for k in 0..50u16 {
            assert_eq!(tree.insert(Item(k, 1)), Some(Item(k, 0)));
        }
        assert_eq!(tree.len(), 50);
        assert!(tree.iter().all(|item| item.1 == 1));
        tree.check_invariants().expect("invariants hold");
        // And no separator still holds an old item
        fn separators_new(node: &Node<Item>) -> bool {
            match node {
                Node::Leaf(_) => true,
                Node::Branch(b) => {
                    b.keys.iter().all(|k| k.1 == 1) && b.children.iter().all(|c| separators_new(c))
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
                tree.insert(Item(k, 0));
            }
            let mut doomed: Vec<u16> = (0..200).collect();
            match order {
                0 => {}
                1 => doomed.reverse(),
                _ => doomed.sort_by_key(|k| (k % 7, *k)),
            }
            for (i, k) in doomed.iter().enumerate() {
                assert_eq!(tree.remove(k), Some(Item(*k, 0)));
                assert_eq!(tree.len(), 199 - i);
                tree.check_invariants().expect("invariants hold");
            }
            assert_eq!(depth(&tree), 1);
            assert!(tree.is_empty());
        }
    }

    #[test]
    fn ranges_start_at_the_bound() {
        let tree = Tree::from_sorted((0..100u16).map(|k| Item(k * 2, 0))).expect("sorted");
        let from = |b: Bound<&u16>| tree.range(b).map(|i| i.0).take(3).collect::<Vec<_>>();
        assert_eq!(from(Bound::Included(&10)), vec![10, 12, 14]);
        assert_eq!(from(Bound::Excluded(&10)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Included(&11)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Excluded(&11)), vec![12, 14, 16]);
        assert_eq!(from(Bound::Unbounded), vec![0, 2, 4]);
        assert_eq!(from(Bound::Included(&198)), vec![198]);
        assert_eq!(from(Bound::Excluded(&198)), Vec::<u16>::new());
        assert_eq!(from(Bound::Included(&500)), Vec::<u16>::new());
    }

    #[test]
    fn from_sorted_builds_full_leaves_and_refuses_disorder() {
        for n in [0u16, 1, 3, 4, 5, 16, 17, 100, 1000] {
            let tree = Tree::from_sorted((0..n).map(|k| Item(k, 0))).expect("sorted");
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
        let refused = Tree::from_sorted([Item(1, 0), Item(3, 0), Item(3, 0)]);
        assert_eq!(refused.err(), Some(NotSorted { position: 2 }));
        let refused = Tree::from_sorted([Item(5, 0), Item(4, 0)]);
        assert_eq!(refused.err(), Some(NotSorted { position: 1 }));
    }

    #[test]
    fn a_clone_does_not_see_later_writes_and_shares_untouched_nodes() {
        // Given a tree and a clone of it
        let mut tree = Tree::from_sorted((0..300u16).map(|k| Item(k, 0))).expect("sorted");
        let view = tree.clone();
        assert!(Arc::ptr_eq(&tree.root, &view.root));
        // When the tree is written
        tree.insert(Item(5, 9));
        tree.remove(&7);
        tree.insert(Item(1000, 0));
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
        Insert(u16, u32),
        Remove(u16),
        Range(u16, bool),
        Snapshot,
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space so that inserts, replacements and removals collide.
        prop_oneof![
            5 => (0u16..300, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            // Runs of appends past the largest key.
            2 => (300u16..400, any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            4 => (0u16..400).prop_map(Op::Remove),
            1 => (0u16..400, any::<bool>()).prop_map(|(k, inclusive)| Op::Range(k, inclusive)),
            1 => Just(Op::Snapshot),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// The tree answers like a `BTreeMap` after every step, and every clone taken on the
        /// way still holds exactly what the map held at that moment.
        #[test]
        fn tree_matches_btreemap_and_clones_stay_frozen(
            initial in 0u16..200,
            ops in proptest::collection::vec(op(), 1..400),
        ) {
            let mut model: BTreeMap<u16, u32> = (0..initial).map(|k| (k * 2, 0)).collect();
            let mut tree = Tree::from_sorted(model.iter().map(|(&k, &v)| Item(k, v))).expect("sorted");
            let mut frozen: Vec<(Tree<Item>, BTreeMap<u16, u32>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let old = tree.insert(Item(k, v)).map(|i| i.1);
                        prop_assert_eq!(old, model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let old = tree.remove(&k).map(|i| i.1);
                        prop_assert_eq!(old, model.remove(&k));
                    }
                    Op::Range(k, inclusive) => {
                        let bound = if inclusive { Bound::Included(&k) } else { Bound::Excluded(&k) };
                        let got: Vec<(u16, u32)> = tree.range(bound).map(|i| (i.0, i.1)).collect();
                        let want: Vec<(u16, u32)> = model.range((bound, Bound::Unbounded)).map(|(&k, &v)| (k, v)).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::Snapshot => frozen.push((tree.clone(), model.clone())),
                }
                tree.check_invariants().map_err(TestCaseError::fail)?;
                prop_assert_eq!(tree.len(), model.len());
                for k in [0u16, 1, 150, 299, 350] {
                    prop_assert_eq!(tree.get(&k).map(|i| i.1), model.get(&k).copied());
                }
            }
            let all: Vec<(u16, u32)> = tree.iter().map(|i| (i.0, i.1)).collect();
            prop_assert_eq!(all, model.into_iter().collect::<Vec<_>>());
            for (clone, expected) in frozen {
                clone.check_invariants().map_err(TestCaseError::fail)?;
                let got: Vec<(u16, u32)> = clone.iter().map(|i| (i.0, i.1)).collect();
                prop_assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
            }
        }
    }
}
