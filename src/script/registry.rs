//! One registry of the script API. Every function, method and property is registered here
//! once, together with its signature, a one-line description and an example; `help`,
//! `help NAME`, the console's Tab completion and the README's API list are all read from
//! the entries (rendered in `help.rs`), so they cannot drift from the bindings.
//!
//! Registration needs no simulation: functions that act on the whole simulation read it
//! from the engine's tag ([`Env`]), so the catalogue can be built anywhere (tests, help)
//! by registering into a throwaway engine.

use super::api::Lesson;
use crate::sim::Sim;
use rhai::{Dynamic, Engine, EvalAltResult, NativeCallContext, RhaiNativeFunc};
use std::any::TypeId;
use std::marker::PhantomData;

// rhai exports its `Variant` trait only with `internals`: every `Clone + Send + Sync +
// 'static` type is one (with the `sync` feature), so the bounds below say that instead.
use std::sync::{Arc, OnceLock};

/// What every binding returns: a Rust error becomes a Rhai runtime error (rhai adds the
/// position of the call).
pub type RResult<T> = Result<T, Box<EvalAltResult>>;

/// An `anyhow` result as a Rhai one, with the whole chain of causes in the message.
pub fn rt<T>(r: anyhow::Result<T>) -> RResult<T> {
    r.map_err(|e| format!("{e:#}").into())
}

/// What the global functions act on; set as the engine's default tag by the session.
#[derive(Clone)]
pub struct Env {
    pub sim: Sim,
    pub lesson: Arc<Lesson>,
}

impl Env {
    /// The session's environment, from inside a native call.
    pub fn of(ctx: &NativeCallContext) -> RResult<Env> {
        ctx.tag()
            .and_then(|t| t.read_lock::<Env>().map(|e| e.clone()))
            .ok_or_else(|| {
                format!(
                    "{}(): this engine has no simulation (knetsim sets one for every script)",
                    ctx.fn_name()
                )
                .into()
            })
    }

    /// Makes `engine`'s functions act on this environment.
    pub fn install(self, engine: &mut Engine) {
        engine.set_default_tag(Dynamic::from(self));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Function,
    Method,
    Property,
}

/// One documented piece of the API.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The type a method or property belongs to (`Cluster`, `Worker`, `EtcdNode`); `None`
    /// for a global function.
    pub receiver: Option<&'static str>,
    pub name: &'static str,
    pub kind: Kind,
    /// How it is called, e.g. `exec_container(pod, cmd) -> string`.
    pub signature: &'static str,
    /// One line: what it does.
    pub about: &'static str,
    /// One line of Rhai that uses it.
    pub example: &'static str,
}

impl Entry {
    /// `Worker.exec_container`, or just `cluster` for a global function.
    pub fn full_name(&self) -> String {
        match self.receiver {
            Some(r) => format!("{r}.{}", self.name),
            None => self.name.to_string(),
        }
    }

    /// The signature as the learner writes it: `Worker.exec(cmd) -> string`.
    pub fn call(&self) -> String {
        match self.receiver {
            Some(r) => format!("{r}.{}", self.signature),
            None => self.signature.to_string(),
        }
    }
}

/// A type the scripts see, with a line saying where its values come from.
#[derive(Debug, Clone)]
pub struct TypeDoc {
    pub name: &'static str,
    pub about: &'static str,
    id: TypeId,
}

/// Registers bindings on an engine and records their entries.
pub struct Registry<'e> {
    engine: &'e mut Engine,
    entries: Vec<Entry>,
    types: Vec<TypeDoc>,
    /// Mistakes in the registration itself (an overload with no entry before it, a method
    /// on a type never registered); the catalogue's tests require none.
    problems: Vec<String>,
}

/// Everything a registration produced.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub entries: Vec<Entry>,
    pub types: Vec<TypeDoc>,
    pub problems: Vec<String>,
}

impl<'e> Registry<'e> {
    pub fn new(engine: &'e mut Engine) -> Registry<'e> {
        Registry {
            engine,
            entries: Vec::new(),
            types: Vec::new(),
            problems: Vec::new(),
        }
    }

    pub fn finish(self) -> Catalog {
        Catalog {
            entries: self.entries,
            types: self.types,
            problems: self.problems,
        }
    }

    /// A type scripts see under `name`.
    pub fn ty<T: Clone + Send + Sync + 'static>(
        &mut self,
        name: &'static str,
        about: &'static str,
    ) -> &mut Self {
        self.engine.register_type_with_name::<T>(name);
        self.types.push(TypeDoc {
            name,
            about,
            id: TypeId::of::<T>(),
        });
        self
    }

    fn type_name<T: 'static>(&mut self, what: &str) -> &'static str {
        match self.types.iter().find(|t| t.id == TypeId::of::<T>()) {
            Some(t) => t.name,
            None => {
                self.problems.push(format!(
                    "{what}: the receiver {} was not registered with ty() first",
                    std::any::type_name::<T>()
                ));
                "?"
            }
        }
    }

    fn push(
        &mut self,
        receiver: Option<&'static str>,
        kind: Kind,
        doc: (&'static str, &'static str, &'static str, &'static str),
    ) {
        let (name, signature, about, example) = doc;
        if self
            .entries
            .iter()
            .any(|e| e.receiver == receiver && e.name == name)
        {
            self.problems.push(format!(
                "{} has two entries: register further forms with overload()",
                receiver.map_or(name.to_string(), |r| format!("{r}.{name}"))
            ));
        }
        self.entries.push(Entry {
            receiver,
            name,
            kind,
            signature,
            about,
            example,
        });
    }

    /// A global function.
    pub fn func<
        A: 'static,
        const N: usize,
        const X: bool,
        R: Clone + Send + Sync + 'static,
        const F: bool,
    >(
        &mut self,
        name: &'static str,
        signature: &'static str,
        about: &'static str,
        example: &'static str,
        f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    ) -> &mut Self {
        self.engine.register_fn(name, f);
        self.push(None, Kind::Function, (name, signature, about, example));
        self
    }

    /// Methods and properties of `T`, registered through the returned handle.
    pub fn on<T: Clone + Send + Sync + 'static>(&mut self) -> On<'_, 'e, T> {
        On {
            reg: self,
            _t: PhantomData,
        }
    }

    /// A method of `T` (the closure's first parameter is `&mut T`).
    fn method<
        T: 'static,
        A: 'static,
        const N: usize,
        const X: bool,
        R: Clone + Send + Sync + 'static,
        const F: bool,
    >(
        &mut self,
        name: &'static str,
        signature: &'static str,
        about: &'static str,
        example: &'static str,
        f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    ) -> &mut Self {
        let receiver = self.type_name::<T>(name);
        self.engine.register_fn(name, f);
        self.push(
            Some(receiver),
            Kind::Method,
            (name, signature, about, example),
        );
        self
    }

    /// A property of `T`, readable as `x.name` and as `x.name()`.
    fn property<T: Clone + Send + Sync + 'static, V: Clone + Send + Sync + 'static>(
        &mut self,
        name: &'static str,
        signature: &'static str,
        about: &'static str,
        example: &'static str,
        get: fn(&mut T) -> V,
    ) -> &mut Self {
        let receiver = self.type_name::<T>(name);
        self.engine.register_get(name, get);
        self.engine.register_fn(name, get);
        self.push(
            Some(receiver),
            Kind::Property,
            (name, signature, about, example),
        );
        self
    }

    /// Another form (other parameter types or count) of the entry registered just before.
    pub fn overload<
        A: 'static,
        const N: usize,
        const X: bool,
        R: Clone + Send + Sync + 'static,
        const F: bool,
    >(
        &mut self,
        f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    ) -> &mut Self {
        match self.entries.last() {
            Some(e) => {
                let name = e.name;
                self.engine.register_fn(name, f);
            }
            None => self
                .problems
                .push("overload() before any entry: it has no name".into()),
        }
        self
    }

    /// How `print` and the console show a `T`: `to_string` and `to_debug`, which are
    /// Rhai's own hooks rather than API of ours, so they have no entry.
    fn display<T: Clone + Send + Sync + 'static>(
        &mut self,
        show: fn(&mut T) -> String,
    ) -> &mut Self {
        self.engine.register_fn("to_string", show);
        self.engine.register_fn("to_debug", show);
        self
    }
}

/// The methods and properties of one type `T`.
pub struct On<'r, 'e, T> {
    reg: &'r mut Registry<'e>,
    _t: PhantomData<T>,
}

impl<T: Clone + Send + Sync + 'static> On<'_, '_, T> {
    /// A method: the closure's first parameter is `&mut T`.
    pub fn method<
        A: 'static,
        const N: usize,
        const X: bool,
        R: Clone + Send + Sync + 'static,
        const F: bool,
    >(
        &mut self,
        name: &'static str,
        signature: &'static str,
        about: &'static str,
        example: &'static str,
        f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    ) -> &mut Self {
        self.reg
            .method::<T, A, N, X, R, F>(name, signature, about, example, f);
        self
    }

    /// A property, readable as `x.name` and as `x.name()`.
    pub fn property<V: Clone + Send + Sync + 'static>(
        &mut self,
        name: &'static str,
        signature: &'static str,
        about: &'static str,
        example: &'static str,
        get: fn(&mut T) -> V,
    ) -> &mut Self {
        self.reg.property(name, signature, about, example, get);
        self
    }

    /// Another form of the method registered just before.
    pub fn overload<
        A: 'static,
        const N: usize,
        const X: bool,
        R: Clone + Send + Sync + 'static,
        const F: bool,
    >(
        &mut self,
        f: impl RhaiNativeFunc<A, N, X, R, F> + Send + Sync + 'static,
    ) -> &mut Self {
        self.reg.overload(f);
        self
    }

    /// How `print` and the console show a `T` (Rhai's `to_string`/`to_debug` hooks).
    pub fn display(&mut self, show: fn(&mut T) -> String) -> &mut Self {
        self.reg.display(show);
        self
    }
}

/// Names registered for every type by [`On::display`], exempt from having an entry.
pub const DISPLAY_HOOKS: &[&str] = &["to_string", "to_debug"];

/// The API's entries, built once by registering into a throwaway engine.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| {
        let mut engine = Engine::new_raw();
        super::api::register(&mut engine)
    })
}

/// Entries named `name`: a bare name (`exec`: every receiver's) or `Type.name`.
pub fn lookup(name: &str) -> Vec<&'static Entry> {
    let name = name.trim().trim_end_matches("()");
    let (receiver, bare) = match name.split_once('.') {
        Some((r, n)) => (Some(r), n),
        None => (None, name),
    };
    catalog()
        .entries
        .iter()
        .filter(|e| e.name == bare && (receiver.is_none() || e.receiver == receiver))
        .collect()
}

/// Names after a dot (methods and properties of every type).
pub fn member_names() -> Vec<&'static str> {
    catalog()
        .entries
        .iter()
        .filter(|e| e.receiver.is_some())
        .map(|e| e.name)
        .collect()
}

/// Names typed like functions: the global functions, and methods whose example calls
/// them that way (the original's `create_conf(C1, [C0], svcs)`).
pub fn function_names() -> Vec<&'static str> {
    catalog()
        .entries
        .iter()
        .filter(|e| e.receiver.is_none() || e.example.starts_with(&format!("{}(", e.name)))
        .map(|e| e.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// (receiver, name) of every binding the engine really has, from rhai's own metadata:
    /// a first parameter of one of our types makes it a method of that type.
    fn engine_bindings() -> BTreeSet<(Option<String>, String)> {
        let mut engine = Engine::new_raw();
        let cat = super::super::api::register(&mut engine);
        let types: Vec<&str> = cat.types.iter().map(|t| t.name).collect();
        engine
            .gen_fn_signatures(false)
            .into_iter()
            .filter_map(|sig| {
                let (name, rest) = sig.split_once('(')?;
                let name = name.trim_start_matches("get$").to_string();
                if DISPLAY_HOOKS.contains(&name.as_str()) {
                    return None;
                }
                let first = rest.split([',', ')']).next().unwrap_or("");
                let ty = first.rsplit(':').next().unwrap_or("").trim();
                let ty = ty.trim_start_matches("&mut ").trim();
                let receiver = types.iter().find(|t| **t == ty).map(|t| t.to_string());
                Some((receiver, name))
            })
            .collect()
    }

    #[test]
    fn every_binding_has_an_entry_and_every_entry_a_binding() {
        let cat = catalog();
        assert!(cat.problems.is_empty(), "{:#?}", cat.problems);
        let bound = engine_bindings();
        assert!(
            bound.len() > 40,
            "rhai's metadata lists the bindings: {bound:?}"
        );
        let documented: BTreeSet<(Option<String>, String)> = cat
            .entries
            .iter()
            .map(|e| (e.receiver.map(str::to_string), e.name.to_string()))
            .collect();
        let missing: Vec<_> = bound.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "bindings without an entry (register them through the Registry): {missing:?}"
        );
        let stale: Vec<_> = documented.difference(&bound).collect();
        assert!(stale.is_empty(), "entries without a binding: {stale:?}");
    }

    #[test]
    fn entries_are_complete_and_consistent() {
        for e in &catalog().entries {
            let n = e.full_name();
            match e.kind {
                Kind::Property => assert!(
                    e.signature == e.name || e.signature.starts_with(&format!("{} -> ", e.name)),
                    "{n}: a property's signature is `name -> type`, got {}",
                    e.signature
                ),
                _ => assert!(
                    e.signature.starts_with(&format!("{}(", e.name)),
                    "{n}: the signature starts with `{}(`, got {}",
                    e.name,
                    e.signature
                ),
            }
            assert!(
                !e.about.is_empty() && !e.about.contains('\n'),
                "{n}: one line of description"
            );
            // The README renders descriptions as Markdown, where `<x>` would vanish as HTML.
            assert!(
                !e.about.contains('<'),
                "{n}: no `<` in the description: {}",
                e.about
            );
            assert!(
                e.example.contains(e.name) && !e.example.contains('\n'),
                "{n}: a one-line example that uses it, got {}",
                e.example
            );
        }
    }

    #[test]
    fn examples_parse_as_rhai() {
        let engine = Engine::new_raw();
        for e in &catalog().entries {
            // Examples may refer to variables (`C0w1`, `out`): only the syntax is checked.
            if let Err(err) = engine.compile(e.example) {
                panic!(
                    "{}: example does not parse: {} ({err})",
                    e.full_name(),
                    e.example
                );
            }
        }
    }

    #[test]
    fn a_missing_environment_is_an_error_not_a_panic() {
        let mut engine = Engine::new_raw();
        super::super::api::register(&mut engine);
        let e = engine
            .eval::<Dynamic>("node_names()")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no simulation"), "{e}");
    }

    #[test]
    fn registry_mistakes_are_reported() {
        #[derive(Clone)]
        struct Unregistered;
        let mut engine = Engine::new_raw();
        let mut reg = Registry::new(&mut engine);
        reg.overload(|| 1_i64);
        reg.func("a", "a()", "one", "a()", || 1_i64);
        reg.func("a", "a()", "again", "a()", || 2_i64);
        reg.on::<Unregistered>()
            .method("m", "m()", "m", "x.m()", |_: &mut Unregistered| 1_i64);
        let p = reg.finish().problems;
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("overload() before any entry"), "{p:?}");
        assert!(p[1].contains("a has two entries"), "{p:?}");
        assert!(p[2].contains("was not registered with ty()"), "{p:?}");
    }
}
