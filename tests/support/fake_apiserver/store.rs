//! The fake's state, as etcd plus the registry would hold it: objects as JSON by
//! (group, plural, namespace, name), one global resourceVersion counter, a bounded
//! history of watch events, and the write rules of the real server (server-set
//! metadata, generation, the status subresource, preconditions, finalizers, cascading
//! deletion, namespace lifecycle, CRD registration).

use std::collections::{BTreeMap, VecDeque};
use std::hash::{BuildHasher, Hasher};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::apply::{self, Owners};
use super::events;
use super::patch::{self, PatchType};
use super::resources::{self, ResourceType};
use super::selector::{self, FieldSelector, LabelSelector};
use super::status::{ApiError, Cause};
use super::validate;

/// How many events the store keeps for watches that resume from a resourceVersion.
const HISTORY: usize = 2000;

/// Where an object is stored.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub group: String,
    pub plural: String,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(ty: &ResourceType, namespace: &str, name: &str) -> Self {
        Key {
            group: ty.storage().0.to_string(),
            plural: ty.storage().1.to_string(),
            namespace: if ty.namespaced { namespace.to_string() } else { String::new() },
            name: name.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Added,
    Modified,
    Deleted,
}

/// One change, as watches see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub rv: u64,
    pub kind: EventKind,
    pub key: Key,
    pub object: Value,
    /// The object before a modification (for selector transitions).
    pub previous: Option<Value>,
}

/// A write the next request to an object answers with 409, as if another client wrote first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictTarget {
    pub key: Key,
    /// `None` for the object itself, `Some("status")` for its status subresource.
    pub subresource: Option<String>,
}

/// What a list request asks for.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

/// How dependents are handled when their owner is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    types: Vec<ResourceType>,
    history: VecDeque<Event>,
    /// A watch may resume from any resourceVersion at or after this one.
    floor: u64,
    live: broadcast::Sender<Event>,
    conflicts: Vec<ConflictTarget>,
    /// Objects whose writes answer 500 until cleared (a failing admission webhook, an
    /// etcd timeout).
    refusing: Vec<ConflictTarget>,
    /// Which field manager owns which fields, by object (server-side apply).
    owners: BTreeMap<Key, Owners>,
    /// Service clusterIPs allocated so far.
    next_ip: u32,
}

impl Store {
    /// A store with the built-in types and the namespaces a fresh cluster has.
    pub fn new() -> Self {
        let (live, _) = broadcast::channel(8192);
        let mut store = Store {
            rv: 0,
            objects: BTreeMap::new(),
            types: resources::builtins(),
            history: VecDeque::new(),
            floor: 0,
            live,
            conflicts: Vec::new(),
            refusing: Vec::new(),
            owners: BTreeMap::new(),
            next_ip: 0,
        };
        let namespaces = store.type_of("", "v1", "namespaces").expect("namespaces are built in");
        for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            store.create(&namespaces, "v1", "", ns).expect("a fresh store creates its namespaces");
        }
        store
    }

    pub fn types(&self) -> &[ResourceType] {
        &self.types
    }

    /// The type served at group/version/plural.
    pub fn type_of(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.types.iter().find(|t| t.group == group && t.plural == plural && t.serves(version)).cloned()
    }

    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.live.subscribe()
    }

    /// The events after `rv`, or None when they are no longer kept.
    pub fn events_after(&self, rv: u64) -> Option<Vec<Event>> {
        (rv >= self.floor).then(|| self.history.iter().filter(|e| e.rv > rv).cloned().collect())
    }

    /// Every stored object of a type (for a watch's initial ADDED events).
    pub fn objects_of(&self, ty: &ResourceType) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| (k.group.as_str(), k.plural.as_str()) == ty.storage())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Every stored object of a type, borrowed (bulk stand-ins at scale read without
    /// copying).
    pub fn each_of<'a>(&'a self, ty: &'a ResourceType) -> impl Iterator<Item = (&'a Key, &'a Value)> + 'a {
        self.objects.iter().filter(move |(k, _)| (k.group.as_str(), k.plural.as_str()) == ty.storage())
    }

    /// Forgets the history: watches from any earlier resourceVersion get 410 Expired.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
    }

    pub fn conflict_next(&mut self, target: ConflictTarget) {
        self.conflicts.push(target);
    }

    /// Every write to `target` answers 500 while `refuse`; normal again after.
    pub fn refuse_writes(&mut self, target: ConflictTarget, refuse: bool) {
        self.refusing.retain(|t| *t != target);
        if refuse {
            self.refusing.push(target);
        }
    }

    /// The stored object, as served at `version`.
    pub fn get(
        &self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&Key::new(ty, namespace, name))
            .map(|o| served(ty, version, o))
            .ok_or_else(|| ApiError::not_found(ty, name))
    }

    /// The raw stored object, if any.
    pub fn raw(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// A list of a type: one page of the objects that match, in key order.
    pub fn list(&self, ty: &ResourceType, version: &str, options: &ListOptions) -> Result<Value, ApiError> {
        let (list_rv, after) = match &options.continue_token {
            Some(token) => {
                let (rv, after) = decode_continue(token)?;
                if rv < self.floor {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You \
                         can start a new list without the continue parameter.",
                    ));
                }
                (rv, Some(after))
            }
            None => (self.rv, None),
        };
        let matching: Vec<(&Key, &Value)> = self
            .objects
            .iter()
            .filter(|(k, _)| (k.group.as_str(), k.plural.as_str()) == ty.storage())
            .filter(|(k, _)| options.namespace.as_ref().is_none_or(|ns| &k.namespace == ns))
            .filter(|(k, _)| after.as_ref().is_none_or(|a| (&k.namespace, &k.name) > (&a.0, &a.1)))
            .filter(|(_, o)| {
                if options.labels.is_empty() && options.fields.is_empty() {
                    return true;
                }
                let seen = served(ty, version, o);
                options.labels.matches(&seen) && options.fields.matches(&seen)
            })
            .collect();
        let limit = options.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
        let page: Vec<Value> = matching.iter().take(limit).map(|(_, o)| list_item(ty, version, o)).collect();
        let mut metadata = json!({"resourceVersion": list_rv.to_string()});
        if matching.len() > limit {
            let (last, _) = matching[limit - 1];
            metadata["continue"] = json!(encode_continue(list_rv, &last.namespace, &last.name));
            // Unknown (so unset) when selectors filter the list.
            if options.labels.is_empty() && options.fields.is_empty() {
                metadata["remainingItemCount"] = json!(matching.len() - limit);
            }
        }
        Ok(json!({
            "kind": format!("{}List", ty.kind),
            "apiVersion": ty.api_version(version),
            "metadata": metadata,
            "items": page,
        }))
    }

    /// POST: creates an object in `namespace` (empty for cluster-scoped types).
    pub fn create(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        body: Value,
    ) -> Result<Value, ApiError> {
        let mut object = body;
        check_type_meta(ty, version, &object)?;
        let name = self.name_for_create(ty, &mut object)?;
        if ty.is_events_v1() {
            let causes = events::creation_causes(&object);
            if !causes.is_empty() {
                return Err(ApiError::invalid(ty, &name, causes));
            }
            object = events::to_core(&object);
        }
        let meta_ns = object["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        if ty.namespaced && !meta_ns.is_empty() && meta_ns != namespace {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        validate_object(ty, &name, &object, None)?;
        let key = Key::new(ty, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::already_exists(ty, &name));
        }
        if ty.namespaced {
            self.check_namespace_open(ty, namespace, &name)?;
        }
        prepare_create(ty, version, namespace, &mut object);
        if ty.group.is_empty() && ty.plural == "services" {
            self.allocate_cluster_ip(&mut object);
        }
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.emit(EventKind::Added, key.clone(), object.clone(), None);
        if ty.group == "apiextensions.k8s.io" {
            self.establish_crd(&key);
        }
        Ok(served(ty, version, &object))
    }

    /// PUT: replaces an object (or its status), if `resourceVersion` matches when given.
    pub fn update(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        body: Value,
    ) -> Result<Value, ApiError> {
        let key = Key::new(ty, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(ty, name))?;
        self.injected_conflict(ty, &key, subresource)?;
        if subresource == Some("scale") {
            return self.write_scale(ty, &key, &old, body);
        }
        check_type_meta(ty, version, &body)?;
        if body["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                body["metadata"]["name"].as_str().unwrap_or_default()
            )));
        }
        match body["metadata"]["resourceVersion"].as_str() {
            Some(rv) if rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default() => {
                return Err(ApiError::conflict(ty, name));
            }
            None if ty.custom => {
                return Err(ApiError::invalid(
                    ty,
                    name,
                    vec![Cause::invalid(
                        "metadata.resourceVersion",
                        "0x0",
                        "must be specified for an update",
                    )],
                ));
            }
            _ => {}
        }
        let new = prepare_update(ty, version, &old, to_storage(ty, body), subresource);
        validate_object(ty, name, &new, Some(&old))?;
        Ok(served(ty, version, &self.commit(ty, &key, &old, new)))
    }

    /// PATCH: applies a merge, JSON or strategic patch (a resourceVersion in the patched
    /// object is a precondition).
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        kind: PatchType,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        if kind == PatchType::Strategic && ty.custom {
            return Err(ApiError::unsupported_media_type("application/strategic-merge-patch+json"));
        }
        let key = Key::new(ty, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(ty, name))?;
        self.injected_conflict(ty, &key, subresource)?;
        if subresource == Some("scale") {
            let patched = patch::apply(kind, &scale_of(ty, &old), body)?;
            return self.write_scale(ty, &key, &old, patched);
        }
        let patched = patch::apply(kind, &served(ty, version, &old), body)?;
        if let Some(rv) = patched["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(ApiError::conflict(ty, name));
        }
        if patched["metadata"]["name"].as_str() != Some(name) {
            return Err(ApiError::bad_request("metadata.name may not be changed by a patch"));
        }
        let new = prepare_update(ty, version, &old, to_storage(ty, patched), subresource);
        validate_object(ty, name, &new, Some(&old))?;
        Ok(served(ty, version, &self.commit(ty, &key, &old, new)))
    }

    /// PATCH with `application/apply-patch+yaml`: creates the object, or merges the
    /// applied fields into it unless another manager owns one it changes (409, unless
    /// forced). Answers the object and whether it was created.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        subresource: Option<&str>,
        body: Value,
        manager: &str,
        force: bool,
    ) -> Result<(Value, bool), ApiError> {
        check_type_meta(ty, version, &body)?;
        if body["apiVersion"].is_null() || body["kind"].is_null() {
            return Err(ApiError::bad_request("apiVersion and kind must be set in an apply patch"));
        }
        // An apply may leave the name out (the URL's is taken), not name another.
        let mut body = body;
        match body["metadata"]["name"].as_str() {
            None => body["metadata"]["name"] = json!(name),
            Some(given) if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            Some(_) => {}
        }
        let mut applied = apply::leaves(&body);
        match subresource {
            Some("status") => applied.retain(|p, _| p[0] == "status"),
            None if ty.status => applied.retain(|p, _| p[0] != "status"),
            None => {}
            Some(_) => return Err(ApiError::unsupported_media_type("application/apply-patch+yaml")),
        }
        let key = Key::new(ty, namespace, name);
        let Some(old) = self.objects.get(&key).cloned() else {
            if subresource.is_some() {
                return Err(ApiError::not_found(ty, name));
            }
            let created = self.create(ty, version, namespace, body)?;
            let mut owners = Owners::new();
            owners.insert(manager.to_string(), applied.into_keys().collect());
            self.owners.insert(key, owners);
            return Ok((created, true));
        };
        self.injected_conflict(ty, &key, subresource)?;
        if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(ApiError::conflict(ty, name));
        }
        let current = served(ty, version, &old);
        let mut owners = self.owners.get(&key).cloned().unwrap_or_default();
        let found = apply::conflicts(&current, &applied, &owners, manager);
        if !found.is_empty() && !force {
            return Err(ApiError::apply_conflict(ty, name, apply::describe(&found)));
        }
        let merged = to_storage(ty, apply::merge(&current, &applied, &mut owners, manager, force));
        let new = prepare_update(ty, version, &old, merged, subresource);
        validate_object(ty, name, &new, Some(&old))?;
        let written = self.commit(ty, &key, &old, new);
        if self.objects.contains_key(&key) {
            self.owners.insert(key, owners);
        }
        Ok((served(ty, version, &written), false))
    }

    /// Records that `manager` owns the fields it changed by a create, update or patch.
    pub fn track(&mut self, key: &Key, before: Option<&Value>, manager: &str) {
        let Some(after) = self.objects.get(key) else { return };
        let owners = self.owners.entry(key.clone()).or_default();
        apply::track_update(before, after, owners, manager);
    }

    /// DELETE: removes an object, or marks it deleted while finalizers remain.
    pub fn delete(
        &mut self,
        ty: &ResourceType,
        version: &str,
        namespace: &str,
        name: &str,
        propagation: Propagation,
    ) -> Result<Value, ApiError> {
        let key = Key::new(ty, namespace, name);
        let old = self.objects.get(&key).cloned().ok_or_else(|| ApiError::not_found(ty, name))?;
        self.injected_conflict(ty, &key, None)?;
        if ty.group.is_empty()
            && ty.plural == "namespaces"
            && ["default", "kube-system", "kube-public"].contains(&name)
        {
            return Err(ApiError::forbidden(ty, name, "this namespace may not be deleted"));
        }
        if propagation == Propagation::Orphan {
            self.orphan_dependents(&old);
        }
        let last = self.delete_key(&key);
        // The object while finalizers hold it; once gone, a Status (pods: the object).
        if self.objects.contains_key(&key) || (ty.group.is_empty() && ty.plural == "pods") {
            return Ok(served(ty, version, &last));
        }
        let mut details = json!({"name": name, "kind": ty.plural, "uid": last["metadata"]["uid"]});
        if !ty.group.is_empty() {
            details["group"] = json!(ty.group);
        }
        Ok(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        )
    }

    /// Deletes what is stored at `key` (marking it while it has finalizers); returns its
    /// last state.
    fn delete_key(&mut self, key: &Key) -> Value {
        let Some(old) = self.objects.get(key).cloned() else { return Value::Null };
        if old["metadata"]["deletionTimestamp"].is_string() {
            return old;
        }
        let Some(ty) = self.types.iter().find(|t| t.group == key.group && t.plural == key.plural).cloned()
        else {
            return self.remove(key);
        };
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        let has_finalizers = old["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        if !has_finalizers && !is_namespace {
            return self.remove(key);
        }
        let mut marked = old.clone();
        marked["metadata"]["deletionTimestamp"] = json!(now());
        marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        if is_namespace {
            marked["status"]["phase"] = json!("Terminating");
        }
        let last = self.commit(&ty, key, &old, marked);
        if is_namespace {
            let inside: Vec<Key> = self.objects.keys().filter(|k| k.namespace == key.name).cloned().collect();
            for k in inside {
                self.delete_key(&k);
            }
            return self.reap_namespace(&key.name).unwrap_or(last);
        }
        last
    }

    /// Removes an object for good: a DELETED event, then its dependents and, for a
    /// CRD, its custom resources.
    fn remove(&mut self, key: &Key) -> Value {
        let Some(mut last) = self.objects.remove(key) else { return Value::Null };
        self.owners.remove(key);
        self.rv += 1;
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(EventKind::Deleted, key.clone(), last.clone(), None);
        if key.group == "apiextensions.k8s.io" && key.plural == "customresourcedefinitions" {
            self.unregister_crd(&last);
        }
        self.collect_dependents(&last);
        if !key.namespace.is_empty() {
            self.reap_namespace(&key.namespace);
        }
        last
    }

    /// Removes a terminating namespace once nothing is left in it.
    fn reap_namespace(&mut self, name: &str) -> Option<Value> {
        let key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: name.into(),
        };
        let terminating =
            self.objects.get(&key).is_some_and(|ns| ns["metadata"]["deletionTimestamp"].is_string());
        let empty = !self.objects.keys().any(|k| k.namespace == name);
        (terminating && empty).then(|| self.remove(&key))
    }

    /// Background garbage collection: dependents left with no live owner are deleted; those
    /// that still have one lose the reference to the deleted owner.
    fn collect_dependents(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else { return };
        let dependents: Vec<Key> = self
            .objects
            .iter()
            .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, _)| k.clone())
            .collect();
        for key in dependents {
            let Some(object) = self.objects.get(&key).cloned() else { continue };
            let live = owner_uids(&object).into_iter().any(|u| self.uid_exists(&u));
            if live {
                let mut kept = object.clone();
                if let Some(refs) = kept["metadata"]["ownerReferences"].as_array_mut() {
                    refs.retain(|r| r["uid"].as_str() != Some(uid));
                }
                if let Some(ty) = self.type_for(&key) {
                    self.commit(&ty, &key, &object, kept);
                }
            } else {
                self.delete_key(&key);
            }
        }
    }

    /// Orphan propagation: the owner's dependents lose their reference to it.
    fn orphan_dependents(&mut self, owner: &Value) {
        let Some(uid) = owner["metadata"]["uid"].as_str() else { return };
        let dependents: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|(_, o)| owner_uids(o).iter().any(|u| u == uid))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, object) in dependents {
            let mut kept = object.clone();
            if let Some(refs) = kept["metadata"]["ownerReferences"].as_array_mut() {
                refs.retain(|r| r["uid"].as_str() != Some(uid));
            }
            if let Some(ty) = self.type_for(&key) {
                self.commit(&ty, &key, &object, kept);
            }
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().any(|o| o["metadata"]["uid"].as_str() == Some(uid))
    }

    fn type_for(&self, key: &Key) -> Option<ResourceType> {
        self.types.iter().find(|t| t.group == key.group && t.plural == key.plural).cloned()
    }

    /// Stores `new` in place of `old` unless nothing changed; bumps generation on spec
    /// changes; removes an object being deleted once its last finalizer is gone.
    fn commit(&mut self, ty: &ResourceType, key: &Key, old: &Value, mut new: Value) -> Value {
        new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if let Some(generation) = old["metadata"]["generation"].as_i64() {
            new["metadata"]["generation"] = json!(generation);
            // The real server also bumps generation when it marks an object deleted.
            let marked = new["metadata"]["deletionTimestamp"].is_string()
                && !old["metadata"]["deletionTimestamp"].is_string();
            if marked || spec_of(ty, &new) != spec_of(ty, old) {
                new["metadata"]["generation"] = json!(generation + 1);
            }
        }
        if &new == old {
            return new;
        }
        let deleting = new["metadata"]["deletionTimestamp"].is_string();
        let no_finalizers = new["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
        let is_namespace = key.group.is_empty() && key.plural == "namespaces";
        if deleting && no_finalizers && !is_namespace {
            self.objects.insert(key.clone(), new);
            return self.remove(key);
        }
        self.rv += 1;
        new["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.objects.insert(key.clone(), new.clone());
        self.emit(EventKind::Modified, key.clone(), new.clone(), Some(old.clone()));
        if ty.group == "apiextensions.k8s.io" && ty.plural == "customresourcedefinitions" {
            self.register_crd(&new);
        }
        new
    }

    fn emit(&mut self, kind: EventKind, key: Key, object: Value, previous: Option<Value>) {
        let event = Event { rv: self.rv, kind, key, object, previous };
        self.history.push_back(event.clone());
        while self.history.len() > HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.floor = dropped.rv;
            }
        }
        // No receiver is not an error: nobody watches.
        let _ = self.live.send(event);
    }

    /// An injected fault for this write: a refusal (500), or a conflict (409), the object
    /// bumped as if someone else wrote it.
    fn injected_conflict(
        &mut self,
        ty: &ResourceType,
        key: &Key,
        subresource: Option<&str>,
    ) -> Result<(), ApiError> {
        let target = ConflictTarget { key: key.clone(), subresource: subresource.map(String::from) };
        if self.refusing.contains(&target) {
            return Err(ApiError::internal(format!(
                "fake-apiserver: writes to {} \"{}\" are refused by the test",
                ty.group_resource(),
                key.name
            )));
        }
        let Some(at) = self.conflicts.iter().position(|c| *c == target) else { return Ok(()) };
        self.conflicts.remove(at);
        if let Some(old) = self.objects.get(key).cloned() {
            let mut bumped = old.clone();
            bumped["metadata"]["annotations"]["fake-apiserver/conflict"] = json!(self.rv.to_string());
            self.commit(ty, key, &old, bumped);
        }
        Err(ApiError::conflict(ty, &key.name))
    }

    /// A create's name: given, or generated from `generateName`.
    fn name_for_create(&self, ty: &ResourceType, object: &mut Value) -> Result<String, ApiError> {
        if let Some(name) = object["metadata"]["name"].as_str().filter(|n| !n.is_empty()) {
            return Ok(name.to_string());
        }
        let Some(prefix) = object["metadata"]["generateName"].as_str().filter(|p| !p.is_empty()) else {
            return Err(ApiError::invalid(
                ty,
                "",
                vec![Cause {
                    reason: "FieldValueRequired",
                    field: "metadata.name".into(),
                    message: "Required value: name or generateName is required".into(),
                }],
            ));
        };
        let name = format!("{prefix}{}", random_suffix());
        object["metadata"]["name"] = json!(name);
        Ok(name)
    }

    fn check_namespace_open(&self, ty: &ResourceType, namespace: &str, name: &str) -> Result<(), ApiError> {
        let key = Key {
            group: String::new(),
            plural: "namespaces".into(),
            namespace: String::new(),
            name: namespace.into(),
        };
        match self.objects.get(&key) {
            None => Err(ApiError::namespace_not_found(namespace)),
            Some(ns) if ns["metadata"]["deletionTimestamp"].is_string() => Err(ApiError::forbidden(
                ty,
                name,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            )),
            Some(_) => Ok(()),
        }
    }

    /// A Service's clusterIP, from 10.96.0.0/12 as a cluster's default range, unless it
    /// is headless or names its own.
    fn allocate_cluster_ip(&mut self, service: &mut Value) {
        if service["spec"]["type"].as_str() == Some("ExternalName") {
            return;
        }
        if service["spec"]["clusterIP"].as_str().is_none_or(str::is_empty) {
            self.next_ip += 1;
            let ip = format!("10.96.{}.{}", self.next_ip / 254, self.next_ip % 254 + 1);
            service["spec"]["clusterIP"] = json!(ip);
        }
        let ip = service["spec"]["clusterIP"].clone();
        service["spec"]["clusterIPs"] = json!([ip]);
    }

    /// What the CRD controllers do after a create: accept the names and establish it.
    fn establish_crd(&mut self, key: &Key) {
        let Some(old) = self.objects.get(key).cloned() else { return };
        let Some(ty) = self.type_for(key) else { return };
        let mut names = old["spec"]["names"].clone();
        if names["singular"].as_str().is_none_or(str::is_empty) {
            names["singular"] = json!(names["kind"].as_str().unwrap_or_default().to_lowercase());
        }
        if names["listKind"].as_str().is_none_or(str::is_empty) {
            names["listKind"] = json!(format!("{}List", names["kind"].as_str().unwrap_or_default()));
        }
        let stored: Vec<Value> = old["spec"]["versions"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter(|v| v["storage"].as_bool() == Some(true))
                    .map(|v| v["name"].clone())
                    .collect()
            })
            .unwrap_or_default();
        let at = now();
        let mut established = old.clone();
        established["status"] = json!({
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": at, "reason": "NoConflicts", "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": at, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"},
            ],
            "acceptedNames": names,
            "storedVersions": stored,
        });
        self.commit(&ty, key, &old, established);
    }

    /// Serves (or re-serves, after an update) the type a CRD defines.
    fn register_crd(&mut self, crd: &Value) {
        let Some(ty) = resources::from_crd(crd) else { return };
        self.types.retain(|t| !(t.group == ty.group && t.plural == ty.plural));
        self.types.push(ty);
    }

    /// Stops serving a deleted CRD's type and deletes its custom resources.
    fn unregister_crd(&mut self, crd: &Value) {
        let group = crd["spec"]["group"].as_str().unwrap_or_default().to_string();
        let plural = crd["spec"]["names"]["plural"].as_str().unwrap_or_default().to_string();
        let owned: Vec<Key> =
            self.objects.keys().filter(|k| k.group == group && k.plural == plural).cloned().collect();
        for key in owned {
            self.remove(&key);
        }
        self.types.retain(|t| !(t.group == group && t.plural == plural));
    }

    /// PUT or PATCH of a deployment's `/scale`: only `spec.replicas` is written.
    fn write_scale(
        &mut self,
        ty: &ResourceType,
        key: &Key,
        old: &Value,
        scale: Value,
    ) -> Result<Value, ApiError> {
        if !ty.scale {
            return Err(ApiError::no_such_path());
        }
        if let Some(rv) = scale["metadata"]["resourceVersion"].as_str()
            && rv != old["metadata"]["resourceVersion"].as_str().unwrap_or_default()
        {
            return Err(ApiError::conflict(ty, &key.name));
        }
        let Some(replicas) = scale["spec"]["replicas"].as_i64().filter(|r| *r >= 0) else {
            return Err(ApiError::invalid(
                ty,
                &key.name,
                vec![Cause::invalid(
                    "spec.replicas",
                    &scale["spec"]["replicas"].to_string(),
                    "must be greater than or equal to 0",
                )],
            ));
        };
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(replicas);
        let written = self.commit(ty, key, old, new);
        Ok(scale_of(ty, &written))
    }
}

/// The `autoscaling/v1` Scale of a deployment.
pub fn scale_of(_ty: &ResourceType, object: &Value) -> Value {
    let meta = &object["metadata"];
    let selector = object["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"], "creationTimestamp": meta["creationTimestamp"],
        },
        "spec": {"replicas": object["spec"]["replicas"]},
        "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

/// An object as served at `version`: its apiVersion and kind set.
pub fn served(ty: &ResourceType, version: &str, object: &Value) -> Value {
    let mut out = if ty.is_events_v1() { events::to_events_v1(object) } else { object.clone() };
    out["apiVersion"] = json!(ty.api_version(version));
    out["kind"] = json!(ty.kind);
    out
}

/// A list item: built-in types' items carry no kind or apiVersion, custom resources' do.
fn list_item(ty: &ResourceType, version: &str, object: &Value) -> Value {
    let mut out = served(ty, version, object);
    if !ty.custom
        && let Some(map) = out.as_object_mut()
    {
        map.remove("apiVersion");
        map.remove("kind");
    }
    out
}

/// What `generation` counts changes of: everything but metadata (and status, for types
/// with a status subresource).
fn spec_of(ty: &ResourceType, object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(map) = rest.as_object_mut() {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if ty.status {
            map.remove("status");
        }
    }
    rest
}

fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| refs.iter().filter_map(|r| r["uid"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// 400 when the body names another kind or group/version than the URL.
fn check_type_meta(ty: &ResourceType, version: &str, object: &Value) -> Result<(), ApiError> {
    if !object.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    if let Some(kind) = object["kind"].as_str()
        && kind != ty.kind
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the body ({kind}) does not match the URL's ({})",
            ty.kind
        )));
    }
    if let Some(api_version) = object["apiVersion"].as_str()
        && api_version != ty.api_version(version)
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            ty.api_version(version)
        )));
    }
    Ok(())
}

/// The apiVersion an object is stored with: core/v1 for events written as
/// events.k8s.io/v1.
fn stored_api_version(ty: &ResourceType, version: &str) -> String {
    if ty.is_events_v1() { "v1".into() } else { ty.api_version(version) }
}

/// An events.k8s.io/v1 body in its stored form; any other body as it is.
fn to_storage(ty: &ResourceType, body: Value) -> Value {
    if ty.is_events_v1() { events::to_core(&body) } else { body }
}

/// The server-set fields of a new object, its defaults, and no status where a status
/// subresource owns it.
fn prepare_create(ty: &ResourceType, version: &str, namespace: &str, object: &mut Value) {
    let meta = &mut object["metadata"];
    if let Some(map) = meta.as_object_mut() {
        for field in [
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "managedFields",
        ] {
            map.remove(field);
        }
    }
    meta["uid"] = json!(uid());
    meta["creationTimestamp"] = json!(now());
    if ty.namespaced {
        meta["namespace"] = json!(namespace);
    } else if let Some(map) = meta.as_object_mut() {
        map.remove("namespace");
    }
    if ty.custom || object.get("spec").is_some() && ty.plural != "namespaces" {
        object["metadata"]["generation"] = json!(1);
    }
    if ty.status
        && let Some(map) = object.as_object_mut()
    {
        map.remove("status");
    }
    object["apiVersion"] = json!(stored_api_version(ty, version));
    object["kind"] = json!(ty.kind);
    default_fields(ty, object);
}

/// The object an update stores: server-owned metadata kept, status or everything but
/// status taken from the old object as the subresource decides.
fn prepare_update(
    ty: &ResourceType,
    version: &str,
    old: &Value,
    body: Value,
    subresource: Option<&str>,
) -> Value {
    let mut new = if subresource == Some("status") {
        let mut kept = old.clone();
        match body.get("status") {
            Some(status) => kept["status"] = status.clone(),
            None => {
                if let Some(map) = kept.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        kept
    } else {
        let mut taken = body;
        if ty.status {
            match old.get("status") {
                Some(status) => taken["status"] = status.clone(),
                None => {
                    if let Some(map) = taken.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        taken
    };
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match old["metadata"].get(field) {
            Some(value) => new["metadata"][field] = value.clone(),
            None => {
                if let Some(map) = new["metadata"].as_object_mut() {
                    map.remove(field);
                }
            }
        }
    }
    if let Some(map) = new["metadata"].as_object_mut() {
        map.remove("managedFields");
    }
    // An update may leave out a Service's allocated clusterIP: it is kept.
    if ty.group.is_empty()
        && ty.plural == "services"
        && new["spec"]["clusterIP"].as_str().is_none_or(str::is_empty)
    {
        for field in ["clusterIP", "clusterIPs"] {
            if !old["spec"][field].is_null() {
                new["spec"][field] = old["spec"][field].clone();
            }
        }
    }
    new["apiVersion"] = json!(stored_api_version(ty, version));
    new["kind"] = json!(ty.kind);
    default_fields(ty, &mut new);
    new
}

/// The defaults the real server fills in on every write, for the fields clients read.
fn default_fields(ty: &ResourceType, object: &mut Value) {
    match (ty.group.as_str(), ty.plural.as_str()) {
        ("", "namespaces") => {
            if object["spec"]["finalizers"].is_null() {
                object["spec"]["finalizers"] = json!(["kubernetes"]);
            }
            if object["status"]["phase"].is_null() {
                object["status"]["phase"] = json!("Active");
            }
        }
        ("", "services") => service_defaults(object),
        ("apps", "deployments") => {
            let spec = &mut object["spec"];
            for (field, value) in [
                ("replicas", json!(1)),
                ("revisionHistoryLimit", json!(10)),
                ("progressDeadlineSeconds", json!(600)),
                (
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                ),
            ] {
                if spec[field].is_null() {
                    spec[field] = value;
                }
            }
        }
        _ => {}
    }
}

/// A Service's defaults: type ClusterIP, no session affinity, single-stack IPv4, and
/// each port TCP with its targetPort its port.
fn service_defaults(object: &mut Value) {
    let spec = &mut object["spec"];
    for (field, value) in [
        ("type", json!("ClusterIP")),
        ("sessionAffinity", json!("None")),
        ("internalTrafficPolicy", json!("Cluster")),
        ("ipFamilies", json!(["IPv4"])),
        ("ipFamilyPolicy", json!("SingleStack")),
    ] {
        if spec[field].is_null() {
            spec[field] = value;
        }
    }
    for port in spec["ports"].as_array_mut().into_iter().flatten() {
        if port["protocol"].is_null() {
            port["protocol"] = json!("TCP");
        }
        if port["targetPort"].is_null() {
            port["targetPort"] = port["port"].clone();
        }
    }
}

/// 422 for a bad name, a CRD named other than `<plural>.<group>`, a deployment whose
/// selector does not select its template, or finalizers added to an object being deleted.
fn validate_object(
    ty: &ResourceType,
    name: &str,
    object: &Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    if old.is_none()
        && let Some(why) = validate::name(ty.name_rule, name)
    {
        causes.push(Cause::invalid("metadata.name", name, &why));
    }
    metadata_causes(object, &mut causes);
    if ty.plural == "customresourcedefinitions" {
        let spec = &object["spec"];
        let expected = format!(
            "{}.{}",
            spec["names"]["plural"].as_str().unwrap_or_default(),
            spec["group"].as_str().unwrap_or_default()
        );
        if name != expected {
            causes.push(Cause::invalid("metadata.name", name, "must be spec.names.plural+\".\"+spec.group"));
        }
        let storage = spec["versions"]
            .as_array()
            .map(|v| v.iter().filter(|v| v["storage"].as_bool() == Some(true)).count());
        if storage != Some(1) {
            causes.push(Cause::invalid(
                "spec.versions",
                "",
                "must have exactly one version marked as storage version",
            ));
        }
    }
    if ty.group == "apps" && ty.plural == "deployments" {
        deployment_causes(object, &mut causes);
    }
    if ty.group.is_empty() && ty.plural == "services" {
        service_causes(object, old, &mut causes);
    }
    if let Some(old) = old
        && old["metadata"]["deletionTimestamp"].is_string()
    {
        let before: Vec<&Value> =
            old["metadata"]["finalizers"].as_array().map(|f| f.iter().collect()).unwrap_or_default();
        let added: Vec<&Value> = object["metadata"]["finalizers"]
            .as_array()
            .map(|f| f.iter().filter(|x| !before.contains(x)).collect())
            .unwrap_or_default();
        if !added.is_empty() {
            causes.push(Cause::forbidden("metadata.finalizers", &format!("no new finalizers can be added if the object is being deleted, found new finalizers {added:?}")));
        }
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(ty, name, causes)) }
}

/// Label keys and values, and annotation keys, with the syntax labels have.
fn metadata_causes(object: &Value, causes: &mut Vec<Cause>) {
    for (key, value) in object["metadata"]["labels"].as_object().into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        if let Err(why) = selector::key_of(key).and_then(|_| selector::value_of(text)) {
            causes.push(Cause::invalid("metadata.labels", if value.is_string() { text } else { key }, &why));
        }
    }
    for key in object["metadata"]["annotations"].as_object().into_iter().flatten().map(|(k, _)| k) {
        if let Err(why) = selector::key_of(key) {
            causes.push(Cause::invalid("metadata.annotations", key, &why));
        }
    }
}

/// A Service needs ports unless headless; its clusterIP, once allocated, is immutable.
fn service_causes(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = &object["spec"];
    let headless = spec["clusterIP"].as_str() == Some("None");
    if !headless
        && spec["type"].as_str() != Some("ExternalName")
        && spec["ports"].as_array().is_none_or(|p| p.is_empty())
    {
        causes.push(Cause::required("spec.ports"));
    }
    if let Some(old) = old
        && spec["clusterIP"] != old["spec"]["clusterIP"]
    {
        causes.push(Cause::invalid(
            "spec.clusterIP",
            spec["clusterIP"].as_str().unwrap_or_default(),
            "field is immutable",
        ));
    }
}

fn deployment_causes(object: &Value, causes: &mut Vec<Cause>) {
    let spec = &object["spec"];
    let Some(match_labels) = spec["selector"]["matchLabels"].as_object() else {
        if spec["selector"]["matchExpressions"].is_null() {
            causes.push(Cause::required("spec.selector"));
        }
        return;
    };
    let labels = &spec["template"]["metadata"]["labels"];
    if match_labels.iter().any(|(k, v)| &labels[k] != v) {
        causes.push(Cause::invalid(
            "spec.template.metadata.labels",
            &labels.to_string(),
            "`selector` does not match template `labels`",
        ));
    }
    if spec["template"]["spec"]["containers"].as_array().is_none_or(|c| c.is_empty()) {
        causes.push(Cause::required("spec.template.spec.containers"));
    }
}

/// An opaque continue token: the list's resourceVersion and the last key it returned.
fn encode_continue(rv: u64, namespace: &str, name: &str) -> String {
    let raw = json!({"rv": rv, "ns": namespace, "name": name}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token}"));
    let bytes: Vec<u8> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let parsed: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = parsed["rv"].as_u64().ok_or_else(bad)?;
    let ns = parsed["ns"].as_str().ok_or_else(bad)?.to_string();
    let name = parsed["name"].as_str().ok_or_else(bad)?.to_string();
    Ok((rv, (ns, name)))
}

/// Now, as the API server writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    hasher.finish()
}

/// A random UUID (version 4 layout).
fn uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// The five characters `generateName` appends, from the alphabet the real server uses.
fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
            n /= ALPHABET.len() as u64;
            c
        })
        .collect()
}
