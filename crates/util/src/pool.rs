//! The worker pool: every item of a list through one function on a fixed number of threads,
//! each thread with state of its own (a payload handle, a buffer), stopping at the first
//! error. Items are taken in the order given: a caller that wants the largest first (so one
//! big item does not finish alone at the end) sorts them so.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `work` on every item of `items` with `threads` workers (at least one, at most one per
/// item). Each worker first makes its own state with `init`. Returns the results in the
/// order of `items`, or the first error (the other workers stop taking new items then).
pub fn map<T, S, R, E>(
    items: &[T],
    threads: usize,
    init: impl Fn() -> Result<S, E> + Sync,
    work: impl Fn(&mut S, &T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(items.len().max(1)) {
            s.spawn(|| {
                let fail = |e: E| {
                    failed.store(true, Ordering::SeqCst);
                    first_error.lock().unwrap().get_or_insert(e);
                };
                let mut state = match init() {
                    Ok(s) => s,
                    Err(e) => return fail(e),
                };
                while !failed.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    match work(&mut state, item) {
                        Ok(r) => results.lock().unwrap()[i] = Some(r),
                        Err(e) => return fail(e),
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap() {
        return Err(e);
    }
    Ok(results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect())
}

/// [`map`] with no per-worker state.
pub fn for_each<T, R, E>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E>
where
    T: Sync,
    R: Send,
    E: Send,
{
    map(items, threads, || Ok(()), |_, item| work(item))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_in_order_and_each_worker_has_its_state() {
        let items: Vec<u32> = (0..100).collect();
        let made = AtomicUsize::new(0);
        let out = map(
            &items,
            4,
            || {
                made.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Vec::new())
            },
            |seen: &mut Vec<u32>, i| {
                seen.push(*i);
                Ok(i * 2)
            },
        )
        .unwrap();
        assert_eq!(out, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        assert!((1..=4).contains(&made.load(Ordering::SeqCst)));
    }

    #[test]
    fn the_first_error_stops_the_rest() {
        let items: Vec<u32> = (0..10_000).collect();
        let ran = AtomicUsize::new(0);
        let err = for_each(&items, 2, |i| {
            ran.fetch_add(1, Ordering::SeqCst);
            if *i == 10 {
                Err(format!("item {i}"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err, "item 10");
        assert!(ran.load(Ordering::SeqCst) < 10_000);
        // No items: no threads, no results.
        assert!(for_each(&[] as &[u32], 4, |_| Ok::<(), ()>(()))
            .unwrap()
            .is_empty());
    }
}
