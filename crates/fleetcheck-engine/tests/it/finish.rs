//! `System::finish`: a check at the end of a case that passed every step fails the case at
//! its last step, and the shrinker (which then runs prefixes too) shrinks it to the least.

use fleetcheck_engine::{run, Abort, Check, Config, Gen, Model, Outcome, System};

/// Commands add 1 or 2 to a counter; nothing is checked on the way.
#[derive(Debug, Default)]
struct Adds;

impl Model for Adds {
    type State = u32;
    type Command = u32;
    type Output = ();

    fn initial_state(&self, _: &mut Gen) -> u32 {
        0
    }
    fn command(&self, _: &u32, g: &mut Gen) -> Option<u32> {
        Some(g.range(1..=2u32))
    }
    fn precondition(&self, _: &u32, _: &u32) -> bool {
        true
    }
    fn next_state(&self, s: &u32, c: &u32) -> u32 {
        s + c
    }
    fn postcondition(&self, _: &u32, _: &u32, _: &()) -> Check {
        Ok(())
    }
    fn shrink_command(&self, c: &u32) -> Vec<u32> {
        if *c > 1 {
            vec![1]
        } else {
            Vec::new()
        }
    }
}

/// At the end, the total must stay under 5 (the planted bug: it may not).
struct EndCheck;

impl System<Adds> for EndCheck {
    type Instance = ();
    fn setup(&self, _: &u32) -> Result<(), Abort> {
        Ok(())
    }
    fn run(&self, _: &mut (), _: &u32, _: &u32) -> Result<(), Abort> {
        Ok(())
    }
    fn finish(&self, _: &mut (), total: &u32) -> Result<Check, Abort> {
        Ok(if *total >= 5 {
            Err(format!("the total is {total}"))
        } else {
            Ok(())
        })
    }
    fn finishes(&self) -> bool {
        true
    }
    fn teardown(&self, _: ()) -> Result<(), Abort> {
        Ok(())
    }
}

#[test]
fn an_end_check_fails_the_case_and_shrinks_to_the_least() {
    let config = Config {
        seed: Some(1),
        ..Config::default()
    };
    let report = run(&Adds, &EndCheck, &config, &());
    let Outcome::Failed(f) = report.outcome else {
        panic!("{}", report.outcome.status());
    };
    assert!(
        f.reason.starts_with("at the end: the total is"),
        "{}",
        f.reason
    );
    // The least case: commands adding up to exactly 5, each as small as can be.
    let total: u32 = f.minimal.commands.iter().sum();
    assert_eq!(total, 5, "{:?}", f.minimal.commands);
    assert!(f.minimal.commands.len() <= 4, "{:?}", f.minimal.commands);
}
