//! The interactive console. (Placeholder until it lands from the `script` branch.)

pub fn run(_session: &mut crate::script::ScriptSession) -> anyhow::Result<()> {
    Ok(())
}
