//! In-order delivery per partition key, shared by the pull batch, the spool forwarder and the
//! best-effort queues: the events of one key (one video) one after another, stopping at the first
//! that is not acknowledged so that the rest wait for their redelivery and order holds; different
//! keys at once.

use std::{collections::HashMap, future::Future};

use futures_util::future::join_all;

/// What [`in_order`] did.
pub struct InOrder<R> {
    /// What `deliver` returned for each acknowledged item, per key in order.
    pub done: Vec<R>,
    /// Items not tried because an earlier item of their key was not acknowledged (dropped).
    pub held_back: usize,
}

/// Delivers `items` grouped by `key` (groups in order of first appearance, each in its items'
/// order): the groups at once, each group's items one after another through `deliver`, which
/// answers `Some` for an acknowledged item and `None` for one that was not; a `None` ends its
/// group, and the items after it are dropped untried.
pub async fn in_order<T, R, Fut>(
    items: Vec<T>,
    key: impl Fn(&T) -> &str,
    deliver: impl Fn(T) -> Fut,
) -> InOrder<R>
where
    Fut: Future<Output = Option<R>>,
{
    // Each item's group, by key, without copying the keys.
    let group_of: Vec<usize> = {
        let mut index: HashMap<&str, usize> = HashMap::new();
        items
            .iter()
            .map(|item| {
                let next = index.len();
                *index.entry(key(item)).or_insert(next)
            })
            .collect()
    };
    let mut groups: Vec<Vec<T>> = Vec::new();
    for (item, group) in items.into_iter().zip(group_of) {
        if group == groups.len() {
            groups.push(Vec::new());
        }
        groups[group].push(item);
    }
    let deliver = &deliver;
    let results = join_all(groups.into_iter().map(|group| async move {
        let count = group.len();
        let mut done = Vec::with_capacity(count);
        for (tried, item) in group.into_iter().enumerate() {
            match deliver(item).await {
                Some(result) => done.push(result),
                None => return (done, count - tried - 1),
            }
        }
        (done, 0)
    }))
    .await;
    let mut out = InOrder {
        done: Vec::new(),
        held_back: 0,
    };
    for (done, held_back) in results {
        out.done.extend(done);
        out.held_back += held_back;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[tokio::test]
    async fn one_key_in_order_stopping_at_its_first_failure_others_unaffected() {
        let items = vec![("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5), ("c", 6)];
        let tried = Mutex::new(Vec::new());
        let result = in_order(
            items,
            |item| item.0,
            |item| {
                tried.lock().expect("lock").push(item.1);
                // The second event of video `a` is not acknowledged.
                async move { (item.1 != 3).then_some(item.1) }
            },
        )
        .await;
        let mut done = result.done;
        done.sort_unstable();
        assert_eq!(done, [1, 2, 5, 6]);
        assert_eq!(result.held_back, 1, "4 waits for 3's redelivery");
        let tried = tried.into_inner().expect("lock");
        assert!(!tried.contains(&4), "never tried after 3 failed: {tried:?}");
        let position = |n| tried.iter().position(|t| *t == n);
        assert!(position(1) < position(3), "a's events in order: {tried:?}");
        assert!(position(2) < position(5), "b's events in order: {tried:?}");
    }
}
