//! Writes a [`DomainPlan`] as libvirt domain XML.
//!
//! A pure function of the plan: the same plan gives the same bytes (fixed element and attribute
//! order, two-space indent, trailing newline), which is what the golden files under
//! `tests/fixtures/libvirt/` pin down. The shape follows what libvirt itself writes for a q35
//! KVM guest: per-device `<boot order>` on the disks (never mixed with `<os><boot dev>`, which
//! libvirt refuses), virtio disks, NICs of the planned model, a serial console, the qemu-guest-agent channel, a
//! memballoon and a virtio RNG fed from `/dev/urandom`.

use quick_xml::Writer;
use quick_xml::events::{BytesEnd, BytesStart, BytesText, Event};

use super::domain::{DomainPlan, FirmwarePlan, METADATA_NAMESPACE, VirtType};
use crate::manifest::Hyperv;
use crate::manifest::MacvtapMode;
use crate::mapping::Connection;

/// An element to write.
#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(&'static str, String)>,
    text: Option<String>,
    children: Vec<Node>,
}

impl Node {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    fn attr(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attrs.push((key, value.into()));
        self
    }

    fn text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    fn child(mut self, child: Node) -> Self {
        self.children.push(child);
        self
    }

    fn children(mut self, children: impl IntoIterator<Item = Node>) -> Self {
        self.children.extend(children);
        self
    }
}

/// The domain XML for a plan.
pub fn domain_xml(plan: &DomainPlan) -> String {
    let mut bytes = Vec::new();
    let mut writer = Writer::new_with_indent(&mut bytes, b' ', 2);
    // Writing to a Vec cannot fail.
    let _ = write_node(&mut writer, &domain_node(plan));
    let mut text = String::from_utf8(bytes).unwrap_or_default();
    text.push('\n');
    text
}

fn write_node<W: std::io::Write>(w: &mut Writer<W>, node: &Node) -> std::io::Result<()> {
    let mut start = BytesStart::new(node.name.as_str());
    for (k, v) in &node.attrs {
        start.push_attribute((*k, v.as_str()));
    }
    if node.text.is_none() && node.children.is_empty() {
        return w.write_event(Event::Empty(start));
    }
    w.write_event(Event::Start(start))?;
    if let Some(text) = &node.text {
        w.write_event(Event::Text(BytesText::new(text)))?;
    }
    for child in &node.children {
        write_node(w, child)?;
    }
    w.write_event(Event::End(BytesEnd::new(node.name.as_str())))
}

fn domain_node(plan: &DomainPlan) -> Node {
    let mut os = Node::new("os").child(
        Node::new("type")
            .attr("arch", "x86_64")
            .attr("machine", "q35")
            .text("hvm"),
    );
    let mut features = Node::new("features")
        .child(Node::new("acpi"))
        .child(Node::new("apic"));
    if let FirmwarePlan::Uefi {
        loader,
        nvram_template,
        secure_boot,
    } = &plan.firmware
    {
        os = os
            .child(
                Node::new("loader")
                    .attr("readonly", "yes")
                    .attr("secure", if *secure_boot { "yes" } else { "no" })
                    .attr("type", "pflash")
                    .text(loader.clone()),
            )
            // No path: libvirt keeps the VM's variables in its own nvram directory, copied from
            // the template on first start.
            .child(Node::new("nvram").attr("template", nvram_template.clone()));
        if *secure_boot {
            // The Secure Boot firmware build refuses to run without SMM.
            features = features.child(Node::new("smm").attr("state", "on"));
        }
    }
    if let Some(hv) = &plan.hyperv {
        features = features.child(hyperv_node(hv));
    }
    let mut cpu = match plan.virt_type {
        VirtType::Kvm => Node::new("cpu")
            .attr("mode", "host-passthrough")
            .attr("check", "none"),
        VirtType::Qemu => Node::new("cpu")
            .attr("mode", "maximum")
            .attr("check", "none"),
    };
    if let Some(t) = &plan.cpu_topology {
        let mut topo = Node::new("topology").attr("sockets", t.sockets.to_string());
        if let Some(d) = t.dies {
            topo = topo.attr("dies", d.to_string());
        }
        cpu = cpu.child(
            topo.attr("cores", t.cores.to_string())
                .attr("threads", t.threads.to_string()),
        );
    }

    Node::new("domain")
        .attr("type", plan.virt_type.name())
        .child(Node::new("name").text(plan.name.clone()))
        .child(Node::new("uuid").text(plan.uuid.clone()))
        .child(metadata_node(plan))
        .child(
            Node::new("memory")
                .attr("unit", "KiB")
                .text(plan.memory_kib.to_string()),
        )
        .child(
            Node::new("currentMemory")
                .attr("unit", "KiB")
                .text(plan.memory_kib.to_string()),
        )
        .child(
            Node::new("vcpu")
                .attr("placement", "static")
                .text(plan.vcpus.to_string()),
        )
        .child(os)
        .child(features)
        .child(cpu)
        .child(Node::new("clock").attr("offset", if plan.windows { "localtime" } else { "utc" }))
        .child(Node::new("on_poweroff").text("destroy"))
        .child(Node::new("on_reboot").text("restart"))
        .child(Node::new("on_crash").text("destroy"))
        .child(devices_node(plan))
}

/// Where the domain came from and which storage pool its disks belong to; libvirt keeps
/// `<metadata>` as it is, so `virsh dumpxml` shows it later.
fn metadata_node(plan: &DomainPlan) -> Node {
    let mut migration =
        Node::new("hyper2kvm:migration").attr("xmlns:hyper2kvm", METADATA_NAMESPACE);
    let mut source = Node::new("hyper2kvm:source");
    if let Some(p) = &plan.source_provider {
        source = source.attr("provider", p.clone());
    }
    if let Some(id) = &plan.source_vm_id {
        source = source.attr("vm_id", id.clone());
    }
    migration = migration.child(source.attr("uuid_origin", uuid_origin_name(plan)));
    migration = migration.children(plan.disks.iter().map(|d| {
        let mut n = Node::new("hyper2kvm:disk")
            .attr("id", d.disk_id.clone())
            .attr("target", d.target.clone());
        if let Some(pool) = &d.pool {
            n = n.attr("pool", pool.clone());
        }
        n
    }));
    Node::new("metadata").child(migration)
}

fn hyperv_node(hv: &Hyperv) -> Node {
    let state = |on: bool| if on { "on" } else { "off" };
    let mut n = Node::new("hyperv").attr("mode", hv.mode.name());
    for (name, on) in hv.switches() {
        let child = match name {
            // A child of <stimer>, written there.
            "stimer_direct" => continue,
            "spinlocks" => {
                let s = Node::new("spinlocks").attr("state", state(on));
                match hv.spinlocks_retries.filter(|_| on) {
                    Some(r) => s.attr("retries", r.to_string()),
                    None => s,
                }
            }
            "stimer" => {
                let s = Node::new("stimer").attr("state", state(on));
                match hv.stimer_direct {
                    Some(d) => s.child(Node::new("direct").attr("state", state(d))),
                    None => s,
                }
            }
            other => Node::new(other).attr("state", state(on)),
        };
        n = n.child(child);
    }
    if let Some(v) = &hv.vendor_id {
        n = n.child(
            Node::new("vendor_id")
                .attr("state", "on")
                .attr("value", v.clone()),
        );
    }
    n
}

fn uuid_origin_name(plan: &DomainPlan) -> &'static str {
    match plan.uuid_origin {
        super::domain::UuidOrigin::Derived => "derived",
        super::domain::UuidOrigin::Preserved => "preserved",
    }
}

fn devices_node(plan: &DomainPlan) -> Node {
    let disks = plan.disks.iter().map(|d| {
        Node::new("disk")
            .attr("type", "file")
            .attr("device", "disk")
            .child(
                Node::new("driver")
                    .attr("name", "qemu")
                    .attr("type", d.format.name()),
            )
            .child(Node::new("source").attr("file", d.path.display().to_string()))
            .child(
                Node::new("target")
                    .attr("dev", d.target.clone())
                    .attr("bus", "virtio"),
            )
            .child(Node::new("boot").attr("order", d.boot_order.to_string()))
    });
    let interfaces = plan.interfaces.iter().map(|i| {
        let source = match &i.connection {
            Connection::Bridge(b) => Some(Node::new("source").attr("bridge", b.clone())),
            Connection::Network(n) => Some(Node::new("source").attr("network", n.clone())),
            Connection::Direct(d) => Some(
                Node::new("source")
                    .attr("dev", d.clone())
                    .attr("mode", i.macvtap_mode.map_or("bridge", MacvtapMode::name)),
            ),
            Connection::User => None,
        };
        let mut n = Node::new("interface")
            .attr("type", i.connection.kind().name())
            .child(Node::new("mac").attr("address", i.mac.to_string()));
        if let Some(mut s) = source {
            if let Some(pg) = &i.portgroup {
                s = s.attr("portgroup", pg.clone());
            }
            n = n.child(s);
        }
        if let Some(vp) = &i.virtualport {
            let mut port = Node::new("virtualport").attr("type", vp.kind.name());
            if let Some(id) = &vp.interfaceid {
                port = port.child(Node::new("parameters").attr("interfaceid", id.clone()));
            }
            n = n.child(port);
        }
        if let Some(vlan) = &i.vlan {
            let mut v = Node::new("vlan");
            if vlan.trunk {
                v = v.attr("trunk", "yes");
            }
            n = n.child(v.children(vlan.tags.iter().map(|t| {
                let tag = Node::new("tag").attr("id", t.id.to_string());
                match t.native_mode {
                    Some(m) => tag.attr("nativeMode", m.name()),
                    None => tag,
                }
            })));
        }
        n.child(Node::new("model").attr("type", i.model.name()))
    });
    Node::new("devices")
        .children(disks)
        .children(interfaces)
        .child(
            Node::new("serial")
                .attr("type", "pty")
                .child(Node::new("target").attr("port", "0")),
        )
        .child(
            Node::new("console")
                .attr("type", "pty")
                .child(Node::new("target").attr("type", "serial").attr("port", "0")),
        )
        .child(
            Node::new("channel").attr("type", "unix").child(
                Node::new("target")
                    .attr("type", "virtio")
                    .attr("name", "org.qemu.guest_agent.0"),
            ),
        )
        // Local-only VNC: a console for when the guest does not come up on the serial line.
        .child(
            Node::new("graphics")
                .attr("type", "vnc")
                .attr("autoport", "yes")
                .attr("listen", "127.0.0.1"),
        )
        .child(Node::new("video").child(Node::new("model").attr("type", "vga")))
        .child(Node::new("memballoon").attr("model", "virtio"))
        .child(
            Node::new("rng").attr("model", "virtio").child(
                Node::new("backend")
                    .attr("model", "random")
                    .text("/dev/urandom"),
            ),
        )
        .children(plan.tpm.iter().map(|t| {
            Node::new("tpm").attr("model", t.model.name()).child(
                Node::new("backend")
                    .attr("type", "emulator")
                    .attr("version", t.version.name()),
            )
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_are_escaped() {
        let node = Node::new("a")
            .attr("k", "x'\"<&")
            .child(Node::new("b").text("1 < 2 & 3"));
        let mut bytes = Vec::new();
        let mut w = Writer::new_with_indent(&mut bytes, b' ', 2);
        write_node(&mut w, &node).expect("write");
        let text = String::from_utf8(bytes).expect("utf-8");
        assert_eq!(
            text,
            "<a k=\"x&apos;&quot;&lt;&amp;\">\n  <b>1 &lt; 2 &amp; 3</b>\n</a>"
        );
        let back = super::super::xml::parse(&text).expect("reads back");
        assert_eq!(back.attr("k"), Some("x'\"<&"));
    }
}
