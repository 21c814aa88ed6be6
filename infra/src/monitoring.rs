//! What the template deploys for on-call and for releases: the alarm topic (e-mail optional),
//! every alarm of [`crate::alarms`] and a dashboard per released service
//! ([`crate::dashboards`]); and the conversion of their JSON, whose strings hold `Fn::Sub`
//! placeholders, into template nodes.

use serde_json::Value;

use crate::alarms::{self, Alarm, Role};
use crate::services::{Service, RELEASED};
use crate::template::{conditional_resource, get_att, reference, resource, sub};
use crate::yaml::{list, map, s, Node};

/// A JSON value as a template node: a string holding placeholders becomes a reference —
/// `${Name}` a `Ref`, `${Name.Attribute}` a `Fn::GetAtt` (`${Function.Version.Version}` the
/// version's `Version`) —, or a `Fn::Sub` when it holds more than one placeholder.
pub fn from_json(value: &Value) -> Node {
    match value {
        Value::String(text) => placeholder_string(text),
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(n) => Node::Int(n),
            None => s(n.to_string()),
        },
        Value::Array(items) => Node::List(items.iter().map(from_json).collect()),
        Value::Object(fields) => Node::Map(fields.iter().map(|(k, v)| (k.clone(), from_json(v))).collect()),
        Value::Null => s(""),
    }
}

fn placeholder_string(text: &str) -> Node {
    if !text.contains("${") {
        return s(text);
    }
    let whole = text
        .strip_prefix("${")
        .and_then(|t| t.strip_suffix('}'))
        .filter(|inner| !inner.contains(['$', '{', '}']));
    match whole {
        Some(name) if name.starts_with("AWS::") || !name.contains('.') => reference(name),
        Some(name) => {
            let (resource, attribute) = name.rsplit_once('.').expect("a dotted name");
            get_att(resource, attribute)
        }
        None => sub(text),
    }
}

/// The logical id of the topic every alarm notifies.
pub const ALARM_TOPIC: &str = "AlarmTopic";

/// The alarm topic, its policy (this stack's alarms may publish) and, when `AlarmEmail` is
/// given, its e-mail subscription.
fn alarm_topic() -> [(String, Node); 3] {
    [
        (
            ALARM_TOPIC.into(),
            resource(
                "AWS::SNS::Topic",
                map([
                        ("DisplayName", s("Keel alarms")),
                        ("KmsMasterKeyId", reference("KeelKey")),
                ]),
            ),
        ),
        (
            "AlarmTopicPolicy".into(),
            resource(
                "AWS::SNS::TopicPolicy",
                map([
                        ("Topics", list([reference(ALARM_TOPIC)])),
                        (
                            "PolicyDocument",
                            map([
                                ("Version", s("2012-10-17")),
                                (
                                    "Statement",
                                    list([map([
                                        ("Sid", s("ThisStacksAlarmsPublish")),
                                        ("Effect", s("Allow")),
                                        (
                                            "Principal",
                                            map([("Service", s("cloudwatch.amazonaws.com"))]),
                                        ),
                                        ("Action", s("sns:Publish")),
                                        ("Resource", reference(ALARM_TOPIC)),
                                        (
                                            "Condition",
                                            map([(
                                                "ArnLike",
                                                map([(
                                                    "aws:SourceArn",
                                                    sub("arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:${AWS::StackName}-*"),
                                                )]),
                                            )]),
                                        ),
                                    ])]),
                                ),
                            ]),
                        ),
                ]),
            ),
        ),
        (
            "AlarmEmailSubscription".into(),
            conditional_resource(
                "HasAlarmEmail",
                "AWS::SNS::Subscription",
                map([
                        ("TopicArn", reference(ALARM_TOPIC)),
                        ("Protocol", s("email")),
                        ("Endpoint", reference("AlarmEmail")),
                ]),
            ),
        ),
    ]
}

/// An alarm as a template resource: its `PutMetricAlarm` input (the same properties), the
/// threshold from its parameter when it has one.
fn alarm_resource(alarm: &Alarm) -> Node {
    let mut properties = match from_json(&alarm.put_metric_alarm()) {
        Node::Map(entries) => entries,
        _ => unreachable!("PutMetricAlarm input is an object"),
    };
    if let Some(parameter) = alarm.threshold_parameter {
        if let Some((_, threshold)) = properties.iter_mut().find(|(k, _)| k == "Threshold") {
            *threshold = reference(parameter.name);
        }
    }
    resource("AWS::CloudWatch::Alarm", Node::Map(properties))
}

/// The logical ids of `service`'s canary alarms (its deployment group's).
pub fn canary_alarm_ids(service: &Service) -> Vec<String> {
    alarms::for_service(service)
        .into_iter()
        .filter(|alarm| alarm.role == Role::Canary)
        .map(|alarm| alarm.id)
        .collect()
}

/// The dashboard of `service`: its body's JSON text, placeholders resolved by `Fn::Sub`.
fn dashboard_resource(service: &Service) -> Node {
    resource(
        "AWS::CloudWatch::Dashboard",
        map([
            (
                "DashboardName",
                sub(&format!("${{AWS::StackName}}-{}", service.name)),
            ),
            (
                "DashboardBody",
                sub(&crate::dashboards::body(service).to_string()),
            ),
        ]),
    )
}

/// The logical id of `service`'s dashboard.
pub fn dashboard_id(service: &Service) -> String {
    format!("{}Dashboard", service.id)
}

/// The alarm topic, every alarm of the released services and their dashboards.
pub fn resources() -> Vec<(String, Node)> {
    let mut resources: Vec<(String, Node)> = alarm_topic().into();
    for service in &RELEASED {
        for alarm in alarms::for_service(service) {
            let resource = alarm_resource(&alarm);
            resources.push((alarm.id, resource));
        }
        resources.push((dashboard_id(service), dashboard_resource(service)));
    }
    resources
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_references() {
        assert_eq!(placeholder_string("plain"), s("plain"));
        assert_eq!(placeholder_string("${AlarmTopic}"), reference("AlarmTopic"));
        assert_eq!(placeholder_string("${AWS::Region}"), reference("AWS::Region"));
        assert_eq!(
            placeholder_string("${ErrorTopic.TopicName}"),
            get_att("ErrorTopic", "TopicName")
        );
        assert_eq!(
            placeholder_string("${BookingApiFunction.Version.Version}"),
            get_att("BookingApiFunction.Version", "Version")
        );
        assert_eq!(
            placeholder_string("${BookingApiFunction}:live"),
            sub("${BookingApiFunction}:live")
        );
        assert_eq!(placeholder_string("${A}-${B}"), sub("${A}-${B}"));
    }
}
