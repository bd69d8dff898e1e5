//! The set, queue and counter checkers: each anomaly found in its smallest history, and the
//! histories that must pass (unknown outcomes either way, failed writes, reads that overlap).

use fleetcheck_engine::collections::{
    check_counter, check_queue, check_queue_order, check_set, CounterOp, CounterRet, QueueOp,
    QueueOrder, QueueRet, SetOp, SetRet,
};
use fleetcheck_engine::history::Outcome;
use fleetcheck_engine::history::Outcome::{Fail, Ok as Done, Unknown};
use fleetcheck_engine::History;

/// A history of one operation per worker: (operation, invoked, completed, outcome).
fn history<O: Clone, R: Clone>(ops: &[(O, u64, Option<u64>, Outcome<R>)]) -> History<O, R> {
    let mut h = History::new();
    for (worker, (op, invoke, complete, outcome)) in ops.iter().enumerate() {
        h.op(worker, op.clone(), *invoke, *complete, outcome.clone());
    }
    h
}

#[test]
fn a_set_passes_when_every_acknowledged_add_is_read_and_unknown_ones_go_either_way() {
    let h = history(&[
        (SetOp::Add(1), 0, Some(10), Done(SetRet::Done)),
        (SetOp::Add(2), 0, None, Unknown),
        (SetOp::Add(3), 0, None, Unknown),
        (SetOp::Add(4), 0, Some(10), Fail),
        (SetOp::Read, 20, Some(30), Done(SetRet::Values(vec![1, 2]))),
    ]);
    assert_eq!(check_set(&h, true), Ok(()));
}

#[test]
fn a_set_loses_an_acknowledged_add() {
    let h = history(&[
        (SetOp::Add(1), 0, Some(10), Done(SetRet::Done)),
        (SetOp::Add(2), 0, Some(10), Done(SetRet::Done)),
        (SetOp::Read, 20, Some(30), Done(SetRet::Values(vec![2]))),
    ]);
    let why = check_set(&h, true).unwrap_err();
    assert!(why.contains("1 acknowledged add lost: add 1 (#0)"), "{why}");
}

#[test]
fn a_read_that_is_not_final_does_not_judge_losses_but_judges_what_it_holds() {
    // The read overlaps the add: missing it is allowed.
    let h = history(&[
        (SetOp::Add(1), 0, Some(30), Done(SetRet::Done)),
        (SetOp::Read, 20, Some(40), Done(SetRet::Values(vec![]))),
    ]);
    assert_eq!(check_set(&h, true), Ok(()));
    // A value never added, one whose add failed, one added after the read ended.
    for (values, expect) in [
        (vec![9], "never added"),
        (vec![4], "never added"),
        (vec![5], "added only after the read ended"),
    ] {
        let h = history(&[
            (SetOp::Add(4), 0, Some(10), Fail),
            (SetOp::Read, 20, Some(30), Done(SetRet::Values(values))),
            (SetOp::Add(5), 40, Some(50), Done(SetRet::Done)),
        ]);
        let why = check_set(&h, true).unwrap_err();
        assert!(why.contains(expect), "{why}");
    }
}

#[test]
fn a_queue_passes_with_dequeues_a_drain_and_unknown_enqueues() {
    let h = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(3), 0, None, Unknown),
        (QueueOp::Enqueue(4), 0, None, Unknown),
        (QueueOp::Dequeue, 5, Some(15), Done(QueueRet::Item(Some(1)))),
        (QueueOp::Dequeue, 5, Some(15), Done(QueueRet::Item(None))),
        (
            QueueOp::Drain,
            20,
            Some(30),
            Done(QueueRet::Items(vec![2, 3])),
        ),
    ]);
    assert_eq!(check_queue(&h, true), Ok(()));
}

#[test]
fn a_queue_that_loses_or_duplicates_or_invents_is_caught() {
    let lost = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Drain, 20, Some(30), Done(QueueRet::Items(vec![1]))),
    ]);
    let why = check_queue(&lost, true).unwrap_err();
    assert!(
        why.contains("1 acknowledged enqueue lost: enqueue 2 (#1)"),
        "{why}"
    );
    // Without a final drain nothing is judged lost.
    let early = history(&[
        (QueueOp::Drain, 0, Some(30), Done(QueueRet::Items(vec![]))),
        (QueueOp::Enqueue(2), 5, Some(10), Done(QueueRet::Done)),
    ]);
    assert_eq!(check_queue(&early, true), Ok(()));
    let twice = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (
            QueueOp::Dequeue,
            20,
            Some(30),
            Done(QueueRet::Item(Some(1))),
        ),
        (QueueOp::Drain, 40, Some(50), Done(QueueRet::Items(vec![1]))),
    ]);
    let why = check_queue(&twice, true).unwrap_err();
    assert!(why.contains("delivered twice"), "{why}");
    let invented = history(&[(QueueOp::Drain, 40, Some(50), Done(QueueRet::Items(vec![7])))]);
    let why = check_queue(&invented, true).unwrap_err();
    assert!(why.contains("never enqueued"), "{why}");
}

#[test]
fn a_counter_read_lies_between_what_was_acknowledged_and_what_may_have_happened() {
    let base = [
        (CounterOp::Incr(2), 0, Some(10), Done(CounterRet::Done)),
        (CounterOp::Incr(3), 0, None, Unknown),
        (CounterOp::Incr(5), 0, Some(10), Fail),
        (CounterOp::Incr(7), 15, Some(40), Done(CounterRet::Done)),
    ];
    for (value, verdict) in [
        (2, None),
        (5, None),
        (9, None),
        (12, None),
        (1, Some("was lost")),
        (13, Some("more than once")),
    ] {
        let mut ops = base.to_vec();
        ops.push((
            CounterOp::Read,
            20,
            Some(30),
            Done(CounterRet::Value(value)),
        ));
        match (check_counter(&history(&ops), true), verdict) {
            (Ok(()), None) => {}
            (Err(why), Some(expect)) => assert!(why.contains(expect), "{value}: {why}"),
            (got, want) => panic!("read {value}: {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn losses_wait_for_the_final_read_and_what_was_taken_unseen_is_allowed_for() {
    // Mid-case (not final): a read that misses an acknowledged add, a counter read below the
    // acknowledged increments, are only late.
    let h = history(&[
        (SetOp::Add(1), 0, Some(10), Done(SetRet::Done)),
        (SetOp::Read, 20, Some(30), Done(SetRet::Values(vec![]))),
    ]);
    assert_eq!(check_set(&h, false), Ok(()));
    assert!(check_set(&h, true).is_err());
    let h = history(&[
        (CounterOp::Incr(2), 0, Some(10), Done(CounterRet::Done)),
        (CounterOp::Read, 20, Some(30), Done(CounterRet::Value(0))),
    ]);
    assert_eq!(check_counter(&h, false), Ok(()));
    assert!(check_counter(&h, true).is_err());
    // A dequeue without an answer may have taken one value; a drain without one, any.
    let one_untold = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Dequeue, 12, None, Unknown),
        (QueueOp::Drain, 20, Some(30), Done(QueueRet::Items(vec![1]))),
    ]);
    assert_eq!(check_queue(&one_untold, true), Ok(()));
    let two_lost = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Dequeue, 12, None, Unknown),
        (QueueOp::Drain, 20, Some(30), Done(QueueRet::Items(vec![]))),
    ]);
    let why = check_queue(&two_lost, true).unwrap_err();
    assert!(why.contains("2 acknowledged enqueues lost"), "{why}");
    let drain_untold = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Drain, 12, None, Unknown),
        (QueueOp::Drain, 20, Some(30), Done(QueueRet::Items(vec![]))),
    ]);
    assert_eq!(check_queue(&drain_untold, true), Ok(()));
}

#[test]
fn a_queue_that_promises_order_gives_acknowledged_values_in_it() {
    let in_order = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 20, Some(30), Done(QueueRet::Done)),
        // Concurrent with 2: either place.
        (QueueOp::Enqueue(3), 25, Some(35), Done(QueueRet::Done)),
        (
            QueueOp::Drain,
            40,
            Some(50),
            Done(QueueRet::Items(vec![1, 3, 2])),
        ),
    ]);
    assert_eq!(check_queue_order(&in_order, QueueOrder::RealTime), Ok(()));
    let swapped = history(&[
        (QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done)),
        (QueueOp::Enqueue(2), 20, Some(30), Done(QueueRet::Done)),
        (
            QueueOp::Drain,
            40,
            Some(50),
            Done(QueueRet::Items(vec![2, 1])),
        ),
    ]);
    let why = check_queue_order(&swapped, QueueOrder::RealTime).unwrap_err();
    assert!(
        why.contains("took 2") && why.contains("out of order"),
        "{why}"
    );
    assert_eq!(check_queue_order(&swapped, QueueOrder::Any), Ok(()));
}

/// Per producer: two workers' values may come out in either order, one worker's in its own.
#[test]
fn a_queue_that_keeps_each_producer_s_order_may_mix_producers() {
    let mut h = History::new();
    h.op(0, QueueOp::Enqueue(1), 0, Some(10), Done(QueueRet::Done));
    h.op(1, QueueOp::Enqueue(2), 20, Some(30), Done(QueueRet::Done));
    h.op(0, QueueOp::Enqueue(3), 40, Some(50), Done(QueueRet::Done));
    let drained = |items: Vec<u64>| {
        let mut h = h.clone();
        h.op(
            2,
            QueueOp::Drain,
            60,
            Some(70),
            Done(QueueRet::Items(items)),
        );
        h
    };
    // Worker 1's 2 before worker 0's 1: out of real-time order, not of any producer's.
    let mixed = drained(vec![2, 1, 3]);
    assert_eq!(check_queue_order(&mixed, QueueOrder::PerProducer), Ok(()));
    assert!(check_queue_order(&mixed, QueueOrder::RealTime).is_err());
    // Worker 0's 3 before its own 1.
    let swapped = drained(vec![3, 2, 1]);
    let why = check_queue_order(&swapped, QueueOrder::PerProducer).unwrap_err();
    assert!(
        why.contains("took 3") && why.contains("both by worker 0"),
        "{why}"
    );
}

#[test]
fn queue_orders_read_from_configuration_files() {
    let read = |text: &str| serde_json::from_str::<QueueOrder>(text);
    assert_eq!(read("false").unwrap(), QueueOrder::Any);
    assert_eq!(read("true").unwrap(), QueueOrder::RealTime);
    assert_eq!(read("\"per-producer\"").unwrap(), QueueOrder::PerProducer);
    let why = read("\"sorted\"").unwrap_err().to_string();
    assert!(why.contains("`sorted` is not a queue order"), "{why}");
    assert_eq!(
        serde_json::to_string(&QueueOrder::PerProducer).unwrap(),
        "\"per-producer\""
    );
}
