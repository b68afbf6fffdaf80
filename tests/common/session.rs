//! A script session for tests: its simulation is torn down, and checked to have left
//! nothing behind, however the test ends.

use super::{assert_nothing_left, sim};
use knetsim::console::{handle, Flow};
use knetsim::script::{Outcome, ScriptSession};
use std::ops::{Deref, DerefMut};

pub struct Session {
    session: ScriptSession,
    instance: String,
}

impl Session {
    /// A session on a new simulation named `instance`; `interactive` as for the console.
    pub fn new(instance: &str, interactive: bool) -> Session {
        Session {
            session: ScriptSession::new(sim(instance), interactive),
            instance: instance.to_string(),
        }
    }

    /// A console line, as a learner types it; what it printed.
    pub fn line(&mut self, l: &str) -> String {
        let mut out = Vec::new();
        assert_eq!(
            handle(&mut self.session, l, &mut out),
            Flow::Continue,
            "{l}"
        );
        String::from_utf8(out).unwrap()
    }

    /// Runs `src` as script `name`, which must succeed.
    pub fn ran(&mut self, name: &str, src: &str) {
        let outcome = self.session.run_source(name, src);
        assert_eq!(outcome, Outcome::Ok, "{src}: {}", self.err());
    }

    /// Runs `src` as script `name`, which must fail with a script error; its message.
    pub fn refused(&mut self, name: &str, src: &str) -> String {
        let outcome = self.session.run_source(name, src);
        assert_eq!(outcome, Outcome::ScriptError, "{src}");
        self.err()
    }

    /// The last script error's text, or nothing.
    pub fn err(&self) -> String {
        self.session.last_error().unwrap_or_default().to_string()
    }
}

impl Deref for Session {
    type Target = ScriptSession;
    fn deref(&self) -> &ScriptSession {
        &self.session
    }
}

impl DerefMut for Session {
    fn deref_mut(&mut self) -> &mut ScriptSession {
        &mut self.session
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.session.sim().teardown().expect("teardown");
        if !std::thread::panicking() {
            assert_nothing_left(&self.instance, &[]);
        }
    }
}
