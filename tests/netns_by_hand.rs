//! A namespace made by hand (`netns("ip netns add NAME")`) is this run's own: a name that
//! is taken by a namespace the run did not make is refused, and teardown leaves that
//! namespace alone.

mod common;

use common::{assert_nothing_left, sim, Guard};
use knetsim::script::{Outcome, ScriptSession};

#[test]
fn a_taken_name_is_refused_and_the_other_namespace_survives_teardown() {
    let mut g = Guard::default();
    // Someone else's namespace, named as this run would name its "myns".
    let theirs = g.ns("fl-byhand-myns");
    {
        let mut s = ScriptSession::new(sim("fl-byhand"), false);
        let o = s.run_source("byhand.rhai", "netns(\"ip netns add myns\");");
        assert_eq!(o, Outcome::ScriptError);
        let e = s.last_error().unwrap_or_default().to_string();
        assert!(
            e.contains("`ip netns add fl-byhand-myns`")
                && e.contains("this run did not make it (it is left alone)"),
            "{e}"
        );
        // It was not taken as ours: running in it is refused too.
        let o = s.run_source("byhand2.rhai", "netns(\"ip netns exec myns true\");");
        assert_eq!(o, Outcome::ScriptError);
        s.sim().teardown().expect("teardown");
    }
    assert!(
        knetsim::netns::exists(&theirs),
        "teardown removed a namespace this run did not make"
    );
    drop(g); // removes the other namespace, which is the test's own
    assert_nothing_left("fl-byhand", &[]);
}
