//! Reads `infra/template.yaml`: the tables, queues, functions, environments, routes and event
//! sources the local stack builds. Nothing about the wiring is listed twice.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeInclusive;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail, ensure};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_yaml::Value;

#[derive(Debug, Clone)]
pub struct Template {
    resources: serde_yaml::Mapping,
    parameters: BTreeMap<String, String>,
    globals_env: serde_yaml::Mapping,
}

#[derive(Debug, Clone)]
pub struct Route {
    pub method: String,
    pub path: String,
    /// Route key as API Gateway writes it: `POST /payments`.
    pub route_key: String,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub logical_id: String,
    pub binary: String,
    pub timeout_s: u64,
    pub memory_mb: u64,
    /// `ReservedConcurrentExecutions`: at most this many instances run at once.
    pub reserved_concurrency: Option<u64>,
    env: serde_yaml::Mapping,
    pub routes: Vec<Route>,
    /// `Schedule` events: how often EventBridge invokes the function.
    pub schedules: Vec<Schedule>,
    /// `SQS` events: queues an event source mapping polls for the function.
    pub queues: Vec<QueueSource>,
    /// `DynamoDB` events: table streams an event source mapping reads for the function.
    pub streams: Vec<StreamSource>,
}

/// An `SQS` event of a function (an enabled one: `Enabled: false` events are left out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSource {
    /// The event's logical name in the template.
    pub name: String,
    /// The queue's logical id (`Queue: Fn::GetAtt [Id, Arn]`).
    pub queue: String,
    pub batch_size: u32,
    /// `FunctionResponseTypes: [ReportBatchItemFailures]`.
    pub report_batch_item_failures: bool,
}

/// Where a stream event source starts reading a shard that exists when it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartingPosition {
    TrimHorizon,
    Latest,
}

/// A `DynamoDB` (stream) event of a function (an enabled one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSource {
    /// The event's logical name in the template.
    pub name: String,
    /// The table's logical id (`Stream: Fn::GetAtt [Id, StreamArn]`).
    pub table: String,
    pub starting_position: StartingPosition,
    pub batch_size: u32,
    pub bisect_on_error: bool,
    /// `None` is -1: retry until the record expires.
    pub max_retry_attempts: Option<u32>,
    /// `None` is -1: no age limit.
    pub max_record_age_s: Option<u64>,
    pub report_batch_item_failures: bool,
    /// The logical id of the on-failure destination queue (`Fn::GetAtt [Id, Arn]`).
    pub on_failure: Option<String>,
}

/// What the resources the stack created resolve to: `Ref` (a table's name, a queue's URL) and
/// `Fn::GetAtt` (`Arn`, `StreamArn`, `QueueName`, `QueueUrl`), by logical id.
#[derive(Debug, Clone, Default)]
pub struct Physical {
    refs: BTreeMap<String, String>,
    attributes: BTreeMap<(String, String), String>,
}

impl Physical {
    /// Records a resource: what `Ref` gives and its attributes.
    pub fn insert<'a>(
        &mut self,
        logical_id: &str,
        reference: String,
        attributes: impl IntoIterator<Item = (&'a str, String)>,
    ) {
        self.refs.insert(logical_id.to_owned(), reference);
        for (name, value) in attributes {
            self.attributes
                .insert((logical_id.to_owned(), name.to_owned()), value);
        }
    }

    pub fn extend(&mut self, other: Physical) {
        self.refs.extend(other.refs);
        self.attributes.extend(other.attributes);
    }

    /// What `Ref: logical_id` resolves to.
    pub fn reference(&self, logical_id: &str) -> Option<&str> {
        self.refs.get(logical_id).map(String::as_str)
    }

    /// What `Fn::GetAtt [logical_id, name]` resolves to.
    pub fn attribute(&self, logical_id: &str, name: &str) -> Option<&str> {
        self.attributes
            .get(&(logical_id.to_owned(), name.to_owned()))
            .map(String::as_str)
    }
}

/// An EventBridge schedule event of a function: `rate(...)` expressions only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The event's logical name in the template.
    pub name: String,
    pub every_s: u64,
}

/// Parses `rate(1 minute)`, `rate(5 minutes)`, `rate(2 hours)`, `rate(1 day)`.
pub fn parse_rate(expression: &str) -> anyhow::Result<u64> {
    let inner = expression
        .strip_prefix("rate(")
        .and_then(|r| r.strip_suffix(')'))
        .with_context(|| format!("{expression:?}: only rate(...) schedules run locally"))?;
    let (value, unit) = inner
        .trim()
        .split_once(' ')
        .with_context(|| format!("{expression:?}: expected rate(<value> <unit>)"))?;
    let value: u64 = value
        .parse()
        .ok()
        .filter(|v| *v > 0)
        .with_context(|| format!("{expression:?}: the value must be a positive integer"))?;
    let unit_s = match (value, unit) {
        (1, "minute") | (2.., "minutes") => 60,
        (1, "hour") | (2.., "hours") => 3600,
        (1, "day") | (2.., "days") => 86_400,
        _ => bail!("{expression:?}: unit {unit:?} (singular for 1, plural otherwise)"),
    };
    Ok(value * unit_s)
}

/// A table with TTL: its name, the TTL attribute (epoch seconds), and its key attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtlTable {
    pub table: String,
    pub attribute: String,
    pub key: Vec<String>,
}

/// What `Ref` and `Fn::Sub` resolve to locally.
#[derive(Debug, Clone)]
pub struct Resolver {
    pub stack_name: String,
    pub region: String,
    pub parameters: BTreeMap<String, String>,
}

fn str_of<'a>(value: &'a Value, what: &str) -> anyhow::Result<&'a str> {
    value
        .as_str()
        .ok_or_else(|| anyhow!("{what} must be a string"))
}

fn get<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    value.as_mapping().and_then(|m| m.get(key))
}

impl Template {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_yaml(&text).with_context(|| path.display().to_string())
    }

    /// A template from its YAML text.
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_yaml::from_str(text).context("parsing template YAML")?;
        let resources = get(&doc, "Resources")
            .and_then(Value::as_mapping)
            .cloned()
            .context("template has no Resources")?;
        let mut parameters = BTreeMap::new();
        if let Some(params) = get(&doc, "Parameters").and_then(Value::as_mapping) {
            for (name, spec) in params {
                let default = get(spec, "Default")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                parameters.insert(
                    str_of(name, "parameter name")?.to_owned(),
                    default.to_owned(),
                );
            }
        }
        let globals_env = get(&doc, "Globals")
            .and_then(|g| get(g, "Function"))
            .and_then(|f| get(f, "Environment"))
            .and_then(|e| get(e, "Variables"))
            .and_then(Value::as_mapping)
            .cloned()
            .unwrap_or_default();
        Ok(Self {
            resources,
            parameters,
            globals_env,
        })
    }

    pub fn load_default() -> anyhow::Result<Self> {
        Self::load(&crate::venv::workspace_root().join("infra/template.yaml"))
    }

    pub fn parameter_defaults(&self) -> &BTreeMap<String, String> {
        &self.parameters
    }

    fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| get(r, "Type").and_then(Value::as_str) == Some(kind))
            .map(|(id, r)| (id.as_str().unwrap_or_default(), r))
    }

    pub fn table_ids(&self) -> Vec<String> {
        self.resources_of_type("AWS::DynamoDB::Table")
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    pub fn queue_ids(&self) -> Vec<String> {
        self.resources_of_type("AWS::SQS::Queue")
            .map(|(id, _)| id.to_owned())
            .collect()
    }

    fn kind_of(&self, logical_id: &str) -> Option<&str> {
        self.resources
            .get(logical_id)
            .and_then(|r| get(r, "Type"))
            .and_then(Value::as_str)
    }

    fn properties(&self, logical_id: &str) -> anyhow::Result<Option<&Value>> {
        let resource = self
            .resources
            .get(logical_id)
            .with_context(|| format!("no resource {logical_id}"))?;
        Ok(get(resource, "Properties"))
    }

    pub fn functions(&self) -> anyhow::Result<Vec<Function>> {
        self.resources_of_type("AWS::Serverless::Function")
            .map(|(id, r)| parse_function(id, r))
            .collect()
    }

    /// Creates every table of the template, named as `resolver` resolves them, each with its
    /// stream when it has a `StreamSpecification` (so moto records stream records). Returns their
    /// names, ARNs and stream ARNs.
    pub async fn create_tables(
        &self,
        client: &aws_sdk_dynamodb::Client,
        resolver: &Resolver,
    ) -> anyhow::Result<Physical> {
        let mut physical = Physical::default();
        for (id, resource) in self.resources_of_type("AWS::DynamoDB::Table") {
            let props =
                get(resource, "Properties").with_context(|| format!("{id} has no Properties"))?;
            let table_name = self.table_name(id, resolver)?;
            let mut request = client
                .create_table()
                .table_name(&table_name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_attribute_definitions(Some(attribute_definitions(props)?))
                .set_key_schema(Some(key_schema(get(props, "KeySchema"))?));
            for gsi in get(props, "GlobalSecondaryIndexes")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                request = request.global_secondary_indexes(global_index(gsi)?);
            }
            let streamed = get(props, "StreamSpecification");
            if let Some(spec) = streamed {
                request = request.stream_specification(
                    stream_specification(spec).with_context(|| id.to_owned())?,
                );
            }
            let description = request
                .send()
                .await
                .with_context(|| format!("creating table {table_name}"))?
                .table_description
                .with_context(|| format!("creating table {table_name}: no TableDescription"))?;
            let mut attributes = Vec::new();
            if let Some(arn) = description.table_arn {
                attributes.push(("Arn", arn));
            }
            match description.latest_stream_arn {
                Some(arn) => attributes.push(("StreamArn", arn)),
                None if streamed.is_some() => {
                    bail!("creating table {table_name}: its stream has no LatestStreamArn")
                }
                None => {}
            }
            physical.insert(id, table_name, attributes);
        }
        Ok(physical)
    }

    /// The tables with DynamoDB TTL enabled (`TimeToLiveSpecification`), named as `resolver`
    /// names them: what the local stack's sweeper expires, as moto does not.
    pub fn ttl_tables(&self, resolver: &Resolver) -> anyhow::Result<Vec<TtlTable>> {
        let mut tables = Vec::new();
        for (id, resource) in self.resources_of_type("AWS::DynamoDB::Table") {
            let Some(props) = get(resource, "Properties") else {
                continue;
            };
            let Some(spec) = get(props, "TimeToLiveSpecification") else {
                continue;
            };
            check_keys(
                spec,
                &["AttributeName", "Enabled"],
                "TimeToLiveSpecification",
            )?;
            if get(spec, "Enabled").and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let attribute = str_of(
                get(spec, "AttributeName")
                    .with_context(|| format!("{id}: TimeToLiveSpecification.AttributeName"))?,
                "AttributeName",
            )?;
            tables.push(TtlTable {
                table: self.table_name(id, resolver)?,
                attribute: attribute.to_owned(),
                key: key_schema(get(props, "KeySchema"))?
                    .into_iter()
                    .map(|k| k.attribute_name)
                    .collect(),
            });
        }
        Ok(tables)
    }

    /// The physical name of a table resource.
    pub fn table_name(&self, logical_id: &str, resolver: &Resolver) -> anyhow::Result<String> {
        match self
            .properties(logical_id)?
            .and_then(|p| get(p, "TableName"))
        {
            Some(name) => self.resolve(name, resolver, &Physical::default()),
            None => Ok(format!("{}-{logical_id}", resolver.stack_name)),
        }
    }

    /// The physical name of a queue resource.
    pub fn queue_name(&self, logical_id: &str, resolver: &Resolver) -> anyhow::Result<String> {
        match self
            .properties(logical_id)?
            .and_then(|p| get(p, "QueueName"))
        {
            Some(name) => self.resolve(name, resolver, &Physical::default()),
            None => Ok(format!("{}-{logical_id}", resolver.stack_name)),
        }
    }

    /// Creates every queue of the template, each dead-letter target before the queues naming it,
    /// and records their URLs, ARNs and names in `physical`. Their timings are the template's
    /// own (see `queue_attributes`).
    pub async fn create_queues(
        &self,
        client: &aws_sdk_sqs::Client,
        resolver: &Resolver,
        physical: &mut Physical,
    ) -> anyhow::Result<()> {
        for id in self.queue_creation_order()? {
            let name = self.queue_name(&id, resolver)?;
            let attributes = self.queue_attributes(&id, resolver, physical)?;
            let url = client
                .create_queue()
                .queue_name(&name)
                .set_attributes(Some(attributes))
                .send()
                .await
                .with_context(|| format!("creating queue {name}"))?
                .queue_url
                .with_context(|| format!("creating queue {name}: no QueueUrl"))?;
            let arn = client
                .get_queue_attributes()
                .queue_url(&url)
                .attribute_names(QueueAttributeName::QueueArn)
                .send()
                .await
                .with_context(|| format!("reading the ARN of queue {name}"))?
                .attributes
                .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
                .with_context(|| format!("queue {name} has no QueueArn"))?;
            physical.insert(
                &id,
                url.clone(),
                [("Arn", arn), ("QueueName", name), ("QueueUrl", url)],
            );
        }
        Ok(())
    }

    /// The queues' URLs, ARNs and names as moto at `endpoint` would give them, creating nothing:
    /// for tools that start functions without a stack (the bench).
    pub fn offline_queues(&self, resolver: &Resolver, endpoint: &str) -> anyhow::Result<Physical> {
        const MOTO_ACCOUNT: &str = "123456789012";
        let mut physical = Physical::default();
        for id in self.queue_ids() {
            let name = self.queue_name(&id, resolver)?;
            let url = format!("{endpoint}/{MOTO_ACCOUNT}/{name}");
            let arn = format!("arn:aws:sqs:{}:{MOTO_ACCOUNT}:{name}", resolver.region);
            physical.insert(
                &id,
                url.clone(),
                [("Arn", arn), ("QueueName", name), ("QueueUrl", url)],
            );
        }
        Ok(physical)
    }

    /// The queues in an order that creates each dead-letter target before the queues naming it.
    fn queue_creation_order(&self) -> anyhow::Result<Vec<String>> {
        let mut pending = Vec::new();
        for id in self.queue_ids() {
            let target = match self.properties(&id)?.and_then(|p| get(p, "RedrivePolicy")) {
                Some(policy) => Some(dead_letter_target(policy).with_context(|| id.clone())?),
                None => None,
            };
            pending.push((id, target));
        }
        let mut order: Vec<String> = Vec::new();
        // Each pass creates at least one queue, or fails.
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|(id, target)| {
                let ready = target.as_ref().is_none_or(|t| order.contains(t));
                if ready {
                    order.push(id.clone());
                }
                !ready
            });
            ensure!(
                pending.len() < before,
                "queues {:?}: their RedrivePolicy targets are not queues of the template, or form a cycle",
                pending
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>()
            );
        }
        Ok(order)
    }

    /// The attributes CreateQueue gets for queue `logical_id`.
    fn queue_attributes(
        &self,
        logical_id: &str,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<HashMap<QueueAttributeName, String>> {
        let mut attributes = HashMap::new();
        let Some(props) = self.properties(logical_id)? else {
            return Ok(attributes);
        };
        // Encryption and tags mean nothing to moto; anything else would change behaviour.
        check_keys(
            props,
            &[
                "QueueName",
                "VisibilityTimeout",
                "MessageRetentionPeriod",
                "RedrivePolicy",
                "SqsManagedSseEnabled",
                "KmsMasterKeyId",
                "KmsDataKeyReusePeriodSeconds",
                "Tags",
            ],
            logical_id,
        )?;
        if get(props, "VisibilityTimeout").is_some() {
            // Not time-scaled: it must outlast an invocation (Lambda refuses a mapping whose
            // function timeout exceeds it), or a slow success is delivered again and counted
            // towards maxReceiveCount. Retry delays are the consumer's own, and those scale.
            let seconds = number_in(props, "VisibilityTimeout", 0..=43_200, 30, logical_id)?;
            attributes.insert(QueueAttributeName::VisibilityTimeout, seconds.to_string());
        }
        if get(props, "MessageRetentionPeriod").is_some() {
            let seconds = number_in(
                props,
                "MessageRetentionPeriod",
                60..=1_209_600,
                0,
                logical_id,
            )?;
            attributes.insert(
                QueueAttributeName::MessageRetentionPeriod,
                seconds.to_string(),
            );
        }
        if let Some(policy) = get(props, "RedrivePolicy") {
            attributes.insert(
                QueueAttributeName::RedrivePolicy,
                self.redrive_policy(policy, resolver, physical)
                    .with_context(|| format!("{logical_id}: RedrivePolicy"))?,
            );
        }
        Ok(attributes)
    }

    /// The RedrivePolicy attribute: JSON with the dead-letter queue's real ARN.
    fn redrive_policy(
        &self,
        policy: &Value,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<String> {
        check_keys(
            policy,
            &["deadLetterTargetArn", "maxReceiveCount"],
            "RedrivePolicy",
        )?;
        let target = get(policy, "deadLetterTargetArn").context("no deadLetterTargetArn")?;
        let max_receive_count =
            number_in(policy, "maxReceiveCount", 1..=1000, 10, "RedrivePolicy")?;
        Ok(serde_json::json!({
            "deadLetterTargetArn": self.resolve(target, resolver, physical)?,
            "maxReceiveCount": max_receive_count,
        })
        .to_string())
    }

    /// Resolves a template value: plain scalars, `Ref` (parameters, tables, created resources),
    /// `Fn::GetAtt` (attributes of created resources) and `Fn::Sub` (its string form).
    pub fn resolve(
        &self,
        value: &Value,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Mapping(m) if m.len() == 1 => {
                if let Some(target) = m.get("Ref") {
                    return self.reference(str_of(target, "Ref")?, resolver, physical);
                }
                if let Some((id, attribute)) = get_att(value)? {
                    return self.attribute(&id, &attribute, physical);
                }
                if let Some(text) = m.get("Fn::Sub") {
                    let text = str_of(text, "Fn::Sub (its string form, locally)")?;
                    return self
                        .substitute(text, resolver, physical)
                        .with_context(|| format!("Fn::Sub {text:?}"));
                }
                bail!("unsupported intrinsic {m:?}")
            }
            other => bail!("unsupported template value {other:?}"),
        }
    }

    /// `Ref target`: a parameter, a created resource, or a table (its name is known up front).
    fn reference(
        &self,
        target: &str,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<String> {
        if let Some(value) = resolver.parameters.get(target) {
            return Ok(value.clone());
        }
        if let Some(value) = physical.reference(target) {
            return Ok(value.to_owned());
        }
        match self.kind_of(target) {
            Some("AWS::DynamoDB::Table") => self.table_name(target, resolver),
            Some("AWS::SQS::Queue") => bail!(
                "Ref {target}: a queue's URL is known once the stack has created it (create_queues)"
            ),
            _ => bail!("cannot resolve Ref {target} locally"),
        }
    }

    /// `Fn::GetAtt [id, attribute]` of a created resource.
    fn attribute(&self, id: &str, attribute: &str, physical: &Physical) -> anyhow::Result<String> {
        if let Some(value) = physical.attribute(id, attribute) {
            return Ok(value.to_owned());
        }
        match self.kind_of(id) {
            Some(kind @ ("AWS::DynamoDB::Table" | "AWS::SQS::Queue")) => bail!(
                "Fn::GetAtt [{id}, {attribute}]: unknown for {kind} {id} (not created yet, or no such attribute locally)"
            ),
            _ => bail!("cannot resolve Fn::GetAtt [{id}, {attribute}] locally"),
        }
    }

    /// `Fn::Sub` text: `${AWS::StackName}`, `${AWS::Region}`, `${Name}` as `Ref Name`,
    /// `${Id.Attribute}` as `Fn::GetAtt [Id, Attribute]` and `${!Literal}` as `${Literal}`.
    fn substitute(
        &self,
        text: &str,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').context("a ${ without its }")?;
            let name = &after[..end];
            let value = match name {
                "AWS::StackName" => resolver.stack_name.clone(),
                "AWS::Region" => resolver.region.clone(),
                _ => match (name.strip_prefix('!'), name.split_once('.')) {
                    (Some(literal), _) => format!("${{{literal}}}"),
                    (None, Some((id, attribute))) => self.attribute(id, attribute, physical)?,
                    (None, None) => self.reference(name, resolver, physical)?,
                },
            };
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// A function's environment: the globals, then its own variables, all resolved.
    pub fn environment(
        &self,
        function: &Function,
        resolver: &Resolver,
        physical: &Physical,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (name, value) in self.globals_env.iter().chain(function.env.iter()) {
            let name = str_of(name, "environment variable name")?;
            env.insert(
                name.to_owned(),
                self.resolve(value, resolver, physical)
                    .with_context(|| format!("{}: {name}", function.logical_id))?,
            );
        }
        Ok(env)
    }
}

/// The target of `Fn::GetAtt` (`[Id, Attribute]` or `"Id.Attribute"`), or `None` when `value`
/// is not one.
fn get_att(value: &Value) -> anyhow::Result<Option<(String, String)>> {
    let Some(args) = get(value, "Fn::GetAtt") else {
        return Ok(None);
    };
    let pair = match args {
        Value::Sequence(items) if items.len() == 2 => (
            str_of(&items[0], "Fn::GetAtt resource")?,
            str_of(&items[1], "Fn::GetAtt attribute")?,
        ),
        Value::String(dotted) => dotted
            .split_once('.')
            .with_context(|| format!("Fn::GetAtt {dotted:?}: expected Id.Attribute"))?,
        other => bail!("Fn::GetAtt {other:?}: expected [Id, Attribute]"),
    };
    Ok(Some((pair.0.to_owned(), pair.1.to_owned())))
}

/// The logical id in `Fn::GetAtt [Id, attribute]`; anything else (a literal ARN: a resource
/// outside the template) is not run locally.
fn get_att_of(value: &Value, attribute: &str, what: &str) -> anyhow::Result<String> {
    match get_att(value)? {
        Some((id, found)) if found == attribute => Ok(id),
        _ => bail!("{what}: expected Fn::GetAtt [<logical id>, {attribute}], got {value:?}"),
    }
}

/// The queue a RedrivePolicy sends dead letters to.
fn dead_letter_target(policy: &Value) -> anyhow::Result<String> {
    let target = get(policy, "deadLetterTargetArn")
        .context("RedrivePolicy (its mapping form, locally) without deadLetterTargetArn")?;
    get_att_of(target, "Arn", "RedrivePolicy.deadLetterTargetArn")
}

/// Fails on any property of `props` not in `known`: one the local stack would silently ignore.
fn check_keys(props: &Value, known: &[&str], what: &str) -> anyhow::Result<()> {
    let Some(mapping) = props.as_mapping() else {
        bail!("{what}: expected a mapping, got {props:?}");
    };
    for key in mapping.keys() {
        let key = str_of(key, "property name")?;
        ensure!(
            known.contains(&key),
            "{what}: property {key} is not supported locally"
        );
    }
    Ok(())
}

/// An integer property within `range` (a number or a numeric string), or `default`.
fn number_in(
    props: &Value,
    key: &str,
    range: RangeInclusive<i64>,
    default: i64,
    what: &str,
) -> anyhow::Result<i64> {
    let Some(value) = get(props, key) else {
        return Ok(default);
    };
    let number = match value {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .with_context(|| format!("{what}: {key} must be an integer, got {value:?}"))?;
    ensure!(
        range.contains(&number),
        "{what}: {key} {number} is outside {range:?}"
    );
    Ok(number)
}

/// A boolean property, or `default`.
fn flag(props: &Value, key: &str, default: bool, what: &str) -> anyhow::Result<bool> {
    match get(props, key) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => bail!("{what}: {key} must be true or false, got {other:?}"),
    }
}

fn stream_specification(spec: &Value) -> anyhow::Result<StreamSpecification> {
    check_keys(spec, &["StreamViewType"], "StreamSpecification")?;
    let view = match get(spec, "StreamViewType").and_then(Value::as_str) {
        Some("KEYS_ONLY") => StreamViewType::KeysOnly,
        Some("NEW_IMAGE") => StreamViewType::NewImage,
        Some("OLD_IMAGE") => StreamViewType::OldImage,
        Some("NEW_AND_OLD_IMAGES") => StreamViewType::NewAndOldImages,
        other => bail!("StreamSpecification: StreamViewType {other:?}"),
    };
    Ok(StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(view)
        .build()?)
}

fn parse_function(id: &str, resource: &Value) -> anyhow::Result<Function> {
    // Where SAM's rust-cargolambda build reads it: with `Binary` anywhere else, `sam build`
    // runs `cargo lambda build` without `--bin` and fails.
    let metadata = get(resource, "Metadata");
    anyhow::ensure!(
        metadata.and_then(|m| get(m, "Binary")).is_none(),
        "{id}: Binary belongs under Metadata.BuildProperties, where sam build reads it"
    );
    let binary = metadata
        .and_then(|m| get(m, "BuildProperties"))
        .and_then(|b| get(b, "Binary"))
        .and_then(Value::as_str)
        .with_context(|| format!("{id}: Metadata.BuildProperties.Binary names the cargo binary"))?;
    let props = get(resource, "Properties").cloned().unwrap_or(Value::Null);
    let env = get(&props, "Environment")
        .and_then(|e| get(e, "Variables"))
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let mut routes = Vec::new();
    let mut schedules = Vec::new();
    let mut queues = Vec::new();
    let mut streams = Vec::new();
    for (name, event) in get(&props, "Events")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let name = str_of(name, "event name")?;
        let what = format!("{id}: event {name}");
        let event_props = get(event, "Properties");
        match get(event, "Type").and_then(Value::as_str) {
            Some("Schedule") => {
                let expression = event_props
                    .and_then(|p| get(p, "Schedule"))
                    .and_then(Value::as_str)
                    .with_context(|| format!("{what}: Schedule without Properties.Schedule"))?;
                schedules.push(Schedule {
                    name: name.to_owned(),
                    every_s: parse_rate(expression).with_context(|| what.clone())?,
                });
            }
            Some("HttpApi") => {
                let p = event_props
                    .with_context(|| format!("{what}: HttpApi event without Properties"))?;
                let method = str_of(get(p, "Method").context("Method")?, "Method")?.to_uppercase();
                let path = str_of(get(p, "Path").context("Path")?, "Path")?.to_owned();
                routes.push(Route {
                    route_key: format!("{method} {path}"),
                    method,
                    path,
                });
            }
            Some("SQS") => queues.extend(parse_queue_source(name, event_props, &what)?),
            Some("DynamoDB") => streams.extend(parse_stream_source(name, event_props, &what)?),
            other => bail!("{what}: event type {other:?} is not run locally"),
        }
    }
    let number =
        |key: &str, default: u64| get(&props, key).and_then(Value::as_u64).unwrap_or(default);
    Ok(Function {
        logical_id: id.to_owned(),
        binary: binary.to_owned(),
        timeout_s: number("Timeout", 15),
        memory_mb: number("MemorySize", 256),
        reserved_concurrency: get(&props, "ReservedConcurrentExecutions").and_then(Value::as_u64),
        env,
        routes,
        schedules,
        queues,
        streams,
    })
}

/// An `SQS` event; `None` when it is disabled.
fn parse_queue_source(
    name: &str,
    props: Option<&Value>,
    what: &str,
) -> anyhow::Result<Option<QueueSource>> {
    let props = props.with_context(|| format!("{what}: no Properties"))?;
    check_keys(
        props,
        &[
            "Queue",
            "BatchSize",
            // Accepted, not played: a local batch is what one receive returns.
            "MaximumBatchingWindowInSeconds",
            "FunctionResponseTypes",
            "Enabled",
        ],
        what,
    )?;
    if !flag(props, "Enabled", true, what)? {
        return Ok(None);
    }
    let queue = get(props, "Queue").with_context(|| format!("{what}: no Queue"))?;
    Ok(Some(QueueSource {
        name: name.to_owned(),
        queue: get_att_of(queue, "Arn", &format!("{what}: Queue"))?,
        batch_size: u32::try_from(number_in(props, "BatchSize", 1..=10_000, 10, what)?)?,
        report_batch_item_failures: report_batch_item_failures(props, what)?,
    }))
}

/// A `DynamoDB` event; `None` when it is disabled.
fn parse_stream_source(
    name: &str,
    props: Option<&Value>,
    what: &str,
) -> anyhow::Result<Option<StreamSource>> {
    let props = props.with_context(|| format!("{what}: no Properties"))?;
    check_keys(
        props,
        &[
            "Stream",
            "StartingPosition",
            "BatchSize",
            // Accepted, not played: a local batch is what one poll returns.
            "MaximumBatchingWindowInSeconds",
            "BisectBatchOnFunctionError",
            "MaximumRetryAttempts",
            "MaximumRecordAgeInSeconds",
            "FunctionResponseTypes",
            "DestinationConfig",
            "ParallelizationFactor",
            "Enabled",
        ],
        what,
    )?;
    if !flag(props, "Enabled", true, what)? {
        return Ok(None);
    }
    ensure!(
        number_in(props, "ParallelizationFactor", 1..=10, 1, what)? == 1,
        "{what}: only ParallelizationFactor 1 runs locally"
    );
    let stream = get(props, "Stream").with_context(|| format!("{what}: no Stream"))?;
    let starting_position = match get(props, "StartingPosition").and_then(Value::as_str) {
        Some("TRIM_HORIZON") => StartingPosition::TrimHorizon,
        Some("LATEST") => StartingPosition::Latest,
        other => bail!("{what}: StartingPosition {other:?} (TRIM_HORIZON or LATEST)"),
    };
    let max_retry_attempts = number_in(props, "MaximumRetryAttempts", -1..=10_000, -1, what)?;
    let max_record_age_s = number_in(props, "MaximumRecordAgeInSeconds", -1..=604_800, -1, what)?;
    ensure!(
        max_record_age_s == -1 || max_record_age_s >= 60,
        "{what}: MaximumRecordAgeInSeconds is -1 or at least 60"
    );
    Ok(Some(StreamSource {
        name: name.to_owned(),
        table: get_att_of(stream, "StreamArn", &format!("{what}: Stream"))?,
        starting_position,
        batch_size: u32::try_from(number_in(props, "BatchSize", 1..=10_000, 100, what)?)?,
        bisect_on_error: flag(props, "BisectBatchOnFunctionError", false, what)?,
        max_retry_attempts: u32::try_from(max_retry_attempts).ok(),
        max_record_age_s: u64::try_from(max_record_age_s).ok(),
        report_batch_item_failures: report_batch_item_failures(props, what)?,
        on_failure: match get(props, "DestinationConfig") {
            Some(config) => Some(on_failure_queue(config, what)?),
            None => None,
        },
    }))
}

/// Whether `FunctionResponseTypes` is `[ReportBatchItemFailures]`.
fn report_batch_item_failures(props: &Value, what: &str) -> anyhow::Result<bool> {
    let Some(types) = get(props, "FunctionResponseTypes") else {
        return Ok(false);
    };
    let types = types
        .as_sequence()
        .with_context(|| format!("{what}: FunctionResponseTypes must be a list"))?;
    for kind in types {
        ensure!(
            kind.as_str() == Some("ReportBatchItemFailures"),
            "{what}: FunctionResponseTypes {kind:?} (only ReportBatchItemFailures exists)"
        );
    }
    Ok(!types.is_empty())
}

/// The queue of `DestinationConfig.OnFailure` (SQS only, locally).
fn on_failure_queue(config: &Value, what: &str) -> anyhow::Result<String> {
    let what = format!("{what}: DestinationConfig");
    check_keys(config, &["OnFailure"], &what)?;
    let on_failure = get(config, "OnFailure").with_context(|| format!("{what}: no OnFailure"))?;
    check_keys(on_failure, &["Type", "Destination"], &what)?;
    if let Some(kind) = get(on_failure, "Type") {
        ensure!(
            kind.as_str() == Some("SQS"),
            "{what}: OnFailure Type {kind:?} (only SQS runs locally)"
        );
    }
    let destination = get(on_failure, "Destination")
        .with_context(|| format!("{what}: OnFailure without Destination"))?;
    get_att_of(
        destination,
        "Arn",
        &format!("{what}: OnFailure.Destination"),
    )
}

fn attribute_definitions(props: &Value) -> anyhow::Result<Vec<AttributeDefinition>> {
    let defs = get(props, "AttributeDefinitions")
        .and_then(Value::as_sequence)
        .context("AttributeDefinitions")?;
    defs.iter()
        .map(|d| {
            let name = str_of(
                get(d, "AttributeName").context("AttributeName")?,
                "AttributeName",
            )?;
            let kind = match str_of(
                get(d, "AttributeType").context("AttributeType")?,
                "AttributeType",
            )? {
                "S" => ScalarAttributeType::S,
                "N" => ScalarAttributeType::N,
                "B" => ScalarAttributeType::B,
                other => bail!("attribute type {other}"),
            };
            Ok(AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(kind)
                .build()?)
        })
        .collect()
}

fn key_schema(schema: Option<&Value>) -> anyhow::Result<Vec<KeySchemaElement>> {
    schema
        .and_then(Value::as_sequence)
        .context("KeySchema")?
        .iter()
        .map(|k| {
            let name = str_of(
                get(k, "AttributeName").context("AttributeName")?,
                "AttributeName",
            )?;
            let kind = match str_of(get(k, "KeyType").context("KeyType")?, "KeyType")? {
                "HASH" => KeyType::Hash,
                "RANGE" => KeyType::Range,
                other => bail!("key type {other}"),
            };
            Ok(KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()?)
        })
        .collect()
}

fn global_index(gsi: &Value) -> anyhow::Result<GlobalSecondaryIndex> {
    let name = str_of(get(gsi, "IndexName").context("IndexName")?, "IndexName")?;
    let projection = match get(gsi, "Projection")
        .and_then(|p| get(p, "ProjectionType"))
        .and_then(Value::as_str)
    {
        Some("KEYS_ONLY") => ProjectionType::KeysOnly,
        _ => ProjectionType::All,
    };
    Ok(GlobalSecondaryIndex::builder()
        .index_name(name)
        .set_key_schema(Some(key_schema(get(gsi, "KeySchema"))?))
        .projection(Projection::builder().projection_type(projection).build())
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_real_template() {
        let template = Template::load_default().expect("template");
        let functions = template.functions().expect("functions");
        let binaries: Vec<&str> = functions.iter().map(|f| f.binary.as_str()).collect();
        assert!(binaries.contains(&"create-payment"), "{binaries:?}");
        let resolver = Resolver {
            stack_name: "t1".into(),
            region: "us-east-1".into(),
            parameters: template.parameter_defaults().clone(),
        };
        let create = functions
            .iter()
            .find(|f| f.binary == "create-payment")
            .expect("create");
        assert_eq!(create.routes[0].route_key, "POST /payments");
        let mut resolver = resolver;
        resolver
            .parameters
            .insert("CallbackBaseUrl".into(), "http://x".into());
        let env = template
            .environment(create, &resolver, &Physical::default())
            .expect("env");
        assert_eq!(env["PAYMENTS_TABLE"], "t1-payments");
        assert_eq!(env["IDEMPOTENCY_TABLE"], "t1-idempotency");
        assert_eq!(env["CALLBACK_BASE_URL"], "http://x");

        let poller = functions
            .iter()
            .find(|f| f.binary == "status-poller")
            .expect("poller");
        assert!(poller.routes.is_empty());
        assert_eq!(poller.reserved_concurrency, Some(2));
        assert_eq!(create.reserved_concurrency, None);
        assert_eq!(
            poller.schedules,
            vec![Schedule {
                name: "EveryMinute".into(),
                every_s: 60
            }]
        );
        assert!(create.schedules.is_empty());
        assert!(create.queues.is_empty() && create.streams.is_empty());

        let relay = functions
            .iter()
            .find(|f| f.binary == "outbox-relay")
            .expect("relay");
        assert_eq!(
            relay.streams,
            vec![StreamSource {
                name: "Outbox".into(),
                table: "PaymentsTable".into(),
                starting_position: StartingPosition::TrimHorizon,
                batch_size: 100,
                bisect_on_error: true,
                max_retry_attempts: Some(5),
                max_record_age_s: Some(3600),
                report_batch_item_failures: true,
                on_failure: Some("RelayFailures".into()),
            }]
        );
        let dead_letters = functions
            .iter()
            .find(|f| f.binary == "dead-letters")
            .expect("dead-letters");
        let queues: Vec<&str> = dead_letters
            .queues
            .iter()
            .map(|q| q.queue.as_str())
            .collect();
        assert_eq!(
            queues,
            [
                "OrderUpdaterDeadLetters",
                "CouponGranterDeadLetters",
                "RelayFailures"
            ]
        );

        // Dead-letter queues first; every function's environment resolves once queues exist.
        let order = template.queue_creation_order().expect("order");
        let position = |id: &str| order.iter().position(|q| q == id).expect(id);
        assert!(position("OrderUpdaterDeadLetters") < position("OrderUpdaterQueue"));
        assert!(position("CouponGranterDeadLetters") < position("CouponGranterQueue"));
        let queues = template
            .offline_queues(&resolver, "http://moto")
            .expect("queues");
        for function in &functions {
            template
                .environment(function, &resolver, &queues)
                .expect(&function.logical_id);
        }
        let env = template
            .environment(dead_letters, &resolver, &queues)
            .expect("env");
        assert_eq!(
            env["DEAD_LETTER_SOURCES"],
            "order-updater|arn:aws:sqs:us-east-1:123456789012:t1-order-updater-dlq|http://moto/123456789012/t1-order-updater,\
             coupon-granter|arn:aws:sqs:us-east-1:123456789012:t1-coupon-granter-dlq|http://moto/123456789012/t1-coupon-granter,\
             outbox-relay|arn:aws:sqs:us-east-1:123456789012:t1-outbox-relay-failures|"
        );
    }

    fn resolver() -> Resolver {
        Resolver {
            stack_name: "s".into(),
            region: "us-east-1".into(),
            parameters: BTreeMap::from([("Retry".to_owned(), "10".to_owned())]),
        }
    }

    /// A template of `resources` (YAML, indented as under `Resources:`).
    #[test]
    fn every_function_names_a_workspace_binary_where_sam_build_reads_it() {
        let functions = Template::load_default()
            .expect("template")
            .functions()
            .expect("functions");
        let in_template: std::collections::BTreeSet<String> =
            functions.into_iter().map(|f| f.binary).collect();
        // Every function crate is one binary named after its package (src/main.rs).
        let root = crate::venv::workspace_root().join("functions");
        let mut in_workspace = std::collections::BTreeSet::new();
        for dir in std::fs::read_dir(&root).expect("functions/") {
            let dir = dir.expect("entry").path();
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
            // `name` is the first key of each crate's `[package]`.
            let name = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .expect("package name");
            assert!(
                dir.join("src/main.rs").is_file(),
                "{dir:?} has no src/main.rs"
            );
            in_workspace.insert(name.trim_matches('"').to_owned());
        }
        assert_eq!(in_template, in_workspace);

        let misplaced = Template::from_yaml(
            "Resources:\n  F:\n    Type: AWS::Serverless::Function\n    Metadata:\n      BuildMethod: rust-cargolambda\n      Binary: f\n",
        )
        .expect("yaml")
        .functions()
        .expect_err("Binary directly under Metadata");
        assert!(
            format!("{misplaced:#}").contains("Metadata.BuildProperties"),
            "{misplaced:#}"
        );
    }

    fn template(resources: &str) -> Template {
        Template::from_yaml(&format!("Resources:\n{resources}")).expect("template")
    }

    const QUEUES: &str = "
  Work:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 60
      RedrivePolicy:
        deadLetterTargetArn:
          Fn::GetAtt: [Dead, Arn]
        maxReceiveCount: 5
  Dead:
    Type: AWS::SQS::Queue
    Properties:
      QueueName:
        Fn::Sub: \"${AWS::StackName}-dead\"
      MessageRetentionPeriod: 1209600
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: pk, AttributeType: S}]
      KeySchema: [{AttributeName: pk, KeyType: HASH}]
      StreamSpecification:
        StreamViewType: NEW_AND_OLD_IMAGES
";

    fn created() -> Physical {
        let mut physical = Physical::default();
        physical.insert(
            "Dead",
            "http://q/1/s-dead".into(),
            [("Arn", "arn:aws:sqs:us-east-1:1:s-dead".into())],
        );
        physical.insert(
            "Table",
            "s-Table".into(),
            [(
                "StreamArn",
                "arn:aws:dynamodb:us-east-1:1:table/s-Table/stream/x".into(),
            )],
        );
        physical
    }

    #[test]
    fn queues_get_scaled_timeouts_and_their_dead_letter_queues_real_arn() {
        let template = template(QUEUES);
        assert_eq!(
            template.queue_creation_order().expect("order"),
            ["Dead", "Work"]
        );
        assert_eq!(
            template.queue_name("Dead", &resolver()).expect("name"),
            "s-dead"
        );
        assert_eq!(
            template.queue_name("Work", &resolver()).expect("name"),
            "s-Work"
        );

        let work = template
            .queue_attributes("Work", &resolver(), &created())
            .expect("attributes");
        assert_eq!(work[&QueueAttributeName::VisibilityTimeout], "60");
        let policy: serde_json::Value =
            serde_json::from_str(&work[&QueueAttributeName::RedrivePolicy]).expect("json");
        assert_eq!(
            policy,
            serde_json::json!({
                "deadLetterTargetArn": "arn:aws:sqs:us-east-1:1:s-dead",
                "maxReceiveCount": 5,
            })
        );
        let dead = template
            .queue_attributes("Dead", &resolver(), &created())
            .expect("attributes");
        assert_eq!(dead[&QueueAttributeName::MessageRetentionPeriod], "1209600");
        assert_eq!(dead.len(), 1);

        // The dead-letter queue must exist first.
        let error = template
            .queue_attributes("Work", &resolver(), &Physical::default())
            .expect_err("no Dead yet");
        assert!(
            format!("{error:#}").contains("Fn::GetAtt [Dead, Arn]"),
            "{error:#}"
        );
    }

    #[test]
    fn queue_problems_are_named() {
        for (resources, expected) in [
            (
                "
  A:
    Type: AWS::SQS::Queue
    Properties:
      FifoQueue: true
",
                "property FifoQueue is not supported locally",
            ),
            (
                "
  A:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: arn:aws:sqs:us-east-1:1:elsewhere
        maxReceiveCount: 5
",
                "expected Fn::GetAtt [<logical id>, Arn]",
            ),
            (
                "
  A:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: {Fn::GetAtt: [B, Arn]}
        maxReceiveCount: 5
  B:
    Type: AWS::SQS::Queue
    Properties:
      RedrivePolicy:
        deadLetterTargetArn: {Fn::GetAtt: [A, Arn]}
        maxReceiveCount: 5
",
                "form a cycle",
            ),
        ] {
            let template = template(resources);
            let error = template
                .queue_creation_order()
                .and_then(|_| {
                    template
                        .queue_attributes("A", &resolver(), &created())
                        .map(drop)
                })
                .expect_err(expected);
            assert!(format!("{error:#}").contains(expected), "{error:#}");
        }
    }

    #[test]
    fn sub_ref_and_get_att_resolve_against_what_was_created() {
        let template = template(QUEUES);
        let physical = created();
        let check = |yaml: &str, expected: &str| {
            let value: Value = serde_yaml::from_str(yaml).expect("yaml");
            let resolved = template.resolve(&value, &resolver(), &physical);
            assert_eq!(resolved.expect(yaml), expected, "{yaml}");
        };
        check("Ref: Dead", "http://q/1/s-dead");
        check("Ref: Table", "s-Table");
        check("Ref: Retry", "10");
        check(
            "Fn::GetAtt: [Table, StreamArn]",
            "arn:aws:dynamodb:us-east-1:1:table/s-Table/stream/x",
        );
        check("Fn::GetAtt: Dead.Arn", "arn:aws:sqs:us-east-1:1:s-dead");
        check(
            "Fn::Sub: \"q=${Dead},arn=${Dead.Arn},t=${Table},${AWS::StackName}@${AWS::Region},r=${Retry},${!Literal}\"",
            "q=http://q/1/s-dead,arn=arn:aws:sqs:us-east-1:1:s-dead,t=s-Table,s@us-east-1,r=10,${Literal}",
        );
        for (yaml, expected) in [
            (
                "Ref: Work",
                "Ref Work: a queue's URL is known once the stack has created it",
            ),
            (
                "Fn::GetAtt: [Work, Arn]",
                "unknown for AWS::SQS::Queue Work",
            ),
            (
                "Fn::Sub: \"${Nothing}\"",
                "cannot resolve Ref Nothing locally",
            ),
            (
                "Fn::Sub: \"${AWS::AccountId}\"",
                "cannot resolve Ref AWS::AccountId locally",
            ),
            ("Fn::Sub: \"${Dead\"", "a ${ without its }"),
            (
                "Fn::GetAtt: [Nothing, Arn]",
                "cannot resolve Fn::GetAtt [Nothing, Arn] locally",
            ),
        ] {
            let value: Value = serde_yaml::from_str(yaml).expect("yaml");
            let error = template
                .resolve(&value, &resolver(), &physical)
                .expect_err(yaml);
            assert!(format!("{error:#}").contains(expected), "{yaml}: {error:#}");
        }
    }

    /// A function `F` with `events` (YAML, indented as under `Events:`).
    fn function(events: &str) -> anyhow::Result<Function> {
        let template = template(&format!(
            "
  F:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: f
    Properties:
      Events:
{events}"
        ));
        template.functions()?.pop().context("no function")
    }

    #[test]
    fn queue_and_stream_events_parse_with_lambdas_defaults() {
        let f = function(
            "
        Q:
          Type: SQS
          Properties:
            Queue: {Fn::GetAtt: [Work, Arn]}
        Off:
          Type: SQS
          Properties:
            Queue: {Fn::GetAtt: [Work, Arn]}
            Enabled: false
        S:
          Type: DynamoDB
          Properties:
            Stream: {Fn::GetAtt: [Table, StreamArn]}
            StartingPosition: LATEST
",
        )
        .expect("function");
        assert_eq!(
            f.queues,
            vec![QueueSource {
                name: "Q".into(),
                queue: "Work".into(),
                batch_size: 10,
                report_batch_item_failures: false,
            }]
        );
        assert_eq!(
            f.streams,
            vec![StreamSource {
                name: "S".into(),
                table: "Table".into(),
                starting_position: StartingPosition::Latest,
                batch_size: 100,
                bisect_on_error: false,
                max_retry_attempts: None,
                max_record_age_s: None,
                report_batch_item_failures: false,
                on_failure: None,
            }]
        );
    }

    #[test]
    fn event_source_problems_are_named() {
        let stream = "
        S:
          Type: DynamoDB
          Properties:
            Stream: {Fn::GetAtt: [Table, StreamArn]}
            StartingPosition: TRIM_HORIZON";
        for (events, expected) in [
            (
                format!("{stream}\n            FilterCriteria: {{}}"),
                "property FilterCriteria is not supported locally",
            ),
            (
                format!("{stream}\n            ParallelizationFactor: 2"),
                "only ParallelizationFactor 1",
            ),
            (
                format!("{stream}\n            MaximumRecordAgeInSeconds: 30"),
                "-1 or at least 60",
            ),
            (
                format!("{stream}\n            MaximumRetryAttempts: -2"),
                "MaximumRetryAttempts -2 is outside",
            ),
            (
                format!("{stream}\n            FunctionResponseTypes: [Other]"),
                "only ReportBatchItemFailures",
            ),
            (
                format!(
                    "{stream}\n            DestinationConfig: {{OnFailure: {{Type: SNS, Destination: {{Fn::GetAtt: [T, Arn]}}}}}}"
                ),
                "only SQS runs locally",
            ),
            (
                "
        S:
          Type: DynamoDB
          Properties:
            Stream: {Fn::GetAtt: [Table, StreamArn]}
            StartingPosition: AT_TIMESTAMP"
                    .to_owned(),
                "StartingPosition Some(\"AT_TIMESTAMP\")",
            ),
            (
                "
        Q:
          Type: SQS
          Properties:
            Queue: arn:aws:sqs:us-east-1:1:elsewhere"
                    .to_owned(),
                "F: event Q: Queue: expected Fn::GetAtt [<logical id>, Arn]",
            ),
            (
                "
        K:
          Type: Kinesis
          Properties: {}"
                    .to_owned(),
                "event type Some(\"Kinesis\") is not run locally",
            ),
        ] {
            let error = function(&events).expect_err(expected);
            assert!(
                format!("{error:#}").contains(expected),
                "{expected}: {error:#}"
            );
        }
    }

    #[test]
    fn rates_parse_exactly() {
        assert_eq!(parse_rate("rate(1 minute)").expect("1 minute"), 60);
        assert_eq!(parse_rate("rate(5 minutes)").expect("5 minutes"), 300);
        assert_eq!(parse_rate("rate(2 hours)").expect("2 hours"), 7200);
        assert_eq!(parse_rate("rate(1 day)").expect("1 day"), 86_400);
        for bad in [
            "rate(1 minutes)",
            "rate(2 minute)",
            "rate(0 minutes)",
            "rate(1 second)",
            "cron(0 12 * * ? *)",
            "rate(x minutes)",
            "rate(1minute)",
        ] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
