//! `netns(cmd)`: a learner's own namespace, by hand, with the real `ip netns` commands
//! (the sim's `handmade` module makes the name this run's own and records it).

use super::api::exec_result;
use super::registry::{Env, Registry};
use rhai::NativeCallContext;

pub fn register(reg: &mut Registry) {
    reg.func(
        "netns",
        "netns(command) -> string",
        "Runs `ip netns add NAME`, `ip netns exec NAME COMMAND` or `ip netns del NAME` on the host, NAME made this run's own \
         (INSTANCE-NAME unless the instance is the default one) and recorded, so teardown removes it; prints the command as run, returns its output",
        r#"netns("ip netns add myns"); print(netns("ip netns exec myns ip -br link"));"#,
        |ctx: NativeCallContext, cmd: &str| {
            let sim = Env::of(&ctx)?.sim;
            exec_result(sim.netns_by_hand(cmd).map(|(real, out)| {
                println!("{}", crate::ui::dim(&format!("$ {real}")));
                out
            }))
        },
    );
}
