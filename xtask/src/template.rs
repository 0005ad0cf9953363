//! Reads `infra/template.yaml`: the tables, functions, environments and routes the local stack
//! builds. Nothing about the wiring is listed twice.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
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
    env: serde_yaml::Mapping,
    pub routes: Vec<Route>,
    /// `Schedule` events: how often EventBridge invokes the function.
    pub schedules: Vec<Schedule>,
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
        let doc: Value = serde_yaml::from_str(&text).context("parsing template YAML")?;
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

    pub fn functions(&self) -> anyhow::Result<Vec<Function>> {
        self.resources_of_type("AWS::Serverless::Function")
            .map(|(id, r)| parse_function(id, r))
            .collect()
    }

    /// Creates every table of the template, named as `resolver` resolves them.
    pub async fn create_tables(
        &self,
        client: &aws_sdk_dynamodb::Client,
        resolver: &Resolver,
    ) -> anyhow::Result<()> {
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
            request
                .send()
                .await
                .with_context(|| format!("creating table {table_name}"))?;
        }
        Ok(())
    }

    /// The physical name of a table resource.
    pub fn table_name(&self, logical_id: &str, resolver: &Resolver) -> anyhow::Result<String> {
        let resource = self
            .resources
            .get(logical_id)
            .with_context(|| format!("no resource {logical_id}"))?;
        match get(resource, "Properties").and_then(|p| get(p, "TableName")) {
            Some(name) => self.resolve(name, resolver),
            None => Ok(format!("{}-{logical_id}", resolver.stack_name)),
        }
    }

    /// Resolves a template value: plain scalars, `Ref` (parameters and tables) and `Fn::Sub`.
    pub fn resolve(&self, value: &Value, resolver: &Resolver) -> anyhow::Result<String> {
        match value {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            Value::Mapping(m) if m.len() == 1 => {
                if let Some(target) = m.get("Ref") {
                    let target = str_of(target, "Ref")?;
                    if let Some(value) = resolver.parameters.get(target) {
                        return Ok(value.clone());
                    }
                    if self.resources.contains_key(target) {
                        return self.table_name(target, resolver);
                    }
                    bail!("cannot resolve Ref {target} locally");
                }
                if let Some(text) = m.get("Fn::Sub") {
                    return Ok(str_of(text, "Fn::Sub")?
                        .replace("${AWS::StackName}", &resolver.stack_name)
                        .replace("${AWS::Region}", &resolver.region));
                }
                bail!("unsupported intrinsic {m:?}")
            }
            other => bail!("unsupported template value {other:?}"),
        }
    }

    /// A function's environment: the globals, then its own variables, all resolved.
    pub fn environment(
        &self,
        function: &Function,
        resolver: &Resolver,
    ) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for (name, value) in self.globals_env.iter().chain(function.env.iter()) {
            let name = str_of(name, "environment variable name")?;
            env.insert(
                name.to_owned(),
                self.resolve(value, resolver)
                    .with_context(|| format!("{}: {name}", function.logical_id))?,
            );
        }
        Ok(env)
    }
}

fn parse_function(id: &str, resource: &Value) -> anyhow::Result<Function> {
    let binary = get(resource, "Metadata")
        .and_then(|m| get(m, "Binary"))
        .and_then(Value::as_str)
        .with_context(|| format!("{id}: Metadata.Binary names the cargo binary"))?;
    let props = get(resource, "Properties").cloned().unwrap_or(Value::Null);
    let env = get(&props, "Environment")
        .and_then(|e| get(e, "Variables"))
        .and_then(Value::as_mapping)
        .cloned()
        .unwrap_or_default();
    let mut routes = Vec::new();
    let mut schedules = Vec::new();
    for (name, event) in get(&props, "Events")
        .and_then(Value::as_mapping)
        .into_iter()
        .flatten()
    {
        let kind = get(event, "Type").and_then(Value::as_str);
        if kind == Some("Schedule") {
            let expression = get(event, "Properties")
                .and_then(|p| get(p, "Schedule"))
                .and_then(Value::as_str)
                .with_context(|| format!("{id}: Schedule event without Properties.Schedule"))?;
            schedules.push(Schedule {
                name: str_of(name, "event name")?.to_owned(),
                every_s: parse_rate(expression).with_context(|| id.to_owned())?,
            });
            continue;
        }
        if kind != Some("HttpApi") {
            continue;
        }
        let p = get(event, "Properties")
            .with_context(|| format!("{id}: HttpApi event without Properties"))?;
        let method = str_of(get(p, "Method").context("Method")?, "Method")?.to_uppercase();
        let path = str_of(get(p, "Path").context("Path")?, "Path")?.to_owned();
        routes.push(Route {
            route_key: format!("{method} {path}"),
            method,
            path,
        });
    }
    let number =
        |key: &str, default: u64| get(&props, key).and_then(Value::as_u64).unwrap_or(default);
    Ok(Function {
        logical_id: id.to_owned(),
        binary: binary.to_owned(),
        timeout_s: number("Timeout", 15),
        memory_mb: number("MemorySize", 256),
        env,
        routes,
        schedules,
    })
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
        let env = template.environment(create, &resolver).expect("env");
        assert_eq!(env["PAYMENTS_TABLE"], "t1-payments");
        assert_eq!(env["IDEMPOTENCY_TABLE"], "t1-idempotency");
        assert_eq!(env["CALLBACK_BASE_URL"], "http://x");

        let poller = functions
            .iter()
            .find(|f| f.binary == "status-poller")
            .expect("poller");
        assert!(poller.routes.is_empty());
        assert_eq!(
            poller.schedules,
            vec![Schedule {
                name: "EveryMinute".into(),
                every_s: 60
            }]
        );
        assert!(create.schedules.is_empty());
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
