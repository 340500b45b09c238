#!/usr/bin/env bash
# Large datacenter migration: 100 VMs, 20 at a time, every VM under the production profile.
# Each VM's disk is /vmware/vm<N>.vmdk and its outputs go to /converted/vm<N>.
set -euo pipefail

# Generate manifests for 100 VMs
for i in {1..100}; do
  mkdir -p /srv/migrate/vm$i   # the guide assumes these directories exist
  cat > /srv/migrate/vm$i/manifest.json <<EOF
{
  "manifest_version": "1.0",
  "source": {"provider": "vmware", "vm_name": "vm$i"},
  "disks": [{"id": "boot", "local_path": "/vmware/vm$i.vmdk"}],
  "output": {"directory": "/converted/vm$i"}
}
EOF
done

# Create batch manifest
cat > datacenter-batch.json <<EOF
{
  "batch_version": "1.0",
  "batch_metadata": {
    "batch_id": "datacenter-full-migration",
    "parallel_limit": 20,
    "continue_on_error": true
  },
  "vms": [
    $(for i in {1..100}; do echo "{\"manifest\": \"/srv/migrate/vm$i/manifest.json\"},"; done | sed '$ s/,$//')
  ],
  "shared_config": {
    "profile": "production"
  }
}
EOF

# Run with 20 parallel conversions
sudo hyper2kvm --batch-manifest datacenter-batch.json --batch-parallel 20
