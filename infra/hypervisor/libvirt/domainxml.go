package libvirt

import (
	"encoding/xml"
	"fmt"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// MetadataNS is the namespace of the <metadata> element Nimbus writes into
// every domain it defines: the VM's UUID, name and metadata map, so a
// domain found on a host (ListVMs, events) is tied back to the inventory.
const MetadataNS = "https://nimbus.cloud/xmlns/vm/1"

// DefaultConsoleDir is where serial consoles are logged unless the host's
// "console.dir" detail says otherwise.
const DefaultConsoleDir = "/var/log/nimbus/console"

// Host details the driver reads (CloudStack agent.properties names where
// CloudStack has one).
const (
	DetailCPUMode     = "guest.cpu.mode"  // host-model, host-passthrough, custom, none
	DetailCPUModel    = "guest.cpu.model" // CPU model for custom mode, e.g. Skylake-Server
	DetailConsoleDir  = "console.dir"     // serial console log directory
	DetailVNCListen   = "vnc.listen"      // VNC listen address (default 0.0.0.0)
	DetailDomainType  = "kvm.domaintype"  // kvm or qemu: skips the acceleration probe
	DetailBridgeType  = "network.bridge.type"
	DetailMigrateAddr = "migration.address" // address other hosts reach this one on for live migration
	// DetailMigrateShared ("true") tells libvirt the host's disks are on
	// shared storage it cannot recognise as such (VIR_MIGRATE_UNSAFE):
	// libvirt trusts NFS, RBD, GlusterFS and cache=none disks by itself.
	DetailMigrateShared = "migration.sharedstorage"
	DetailMachine       = "guest.machine" // QEMU machine type, default pc
)

// domainParams is what the host contributes to a domain's XML.
type domainParams struct {
	Type       string // hypervisor.TypeKVM, TypeLXC, TypeXenProject
	DomainType string // libvirt domain type: kvm, qemu, lxc, xen
	Arch       string // x86_64
	Machine    string // QEMU machine type; "" for the default
	CPUMode    string // host-model, host-passthrough, custom, none/""
	CPUModel   string
	ConsoleDir string
	VNCListen  string
	OVS        bool // bridges are Open vSwitch: VLANs become tags
}

// XML element types: a subset of libvirt's domain schema, enough to write
// Nimbus domains and to read back what the driver needs.
type domainXML struct {
	XMLName       xml.Name     `xml:"domain"`
	Type          string       `xml:"type,attr"`
	Name          string       `xml:"name"`
	UUID          string       `xml:"uuid,omitempty"`
	Title         string       `xml:"title,omitempty"`
	Metadata      *metadataXML `xml:"metadata"`
	Memory        *memoryXML   `xml:"memory"`
	CurrentMemory *memoryXML   `xml:"currentMemory"`
	VCPU          *vcpuXML     `xml:"vcpu"`
	CPUTune       *cputuneXML  `xml:"cputune"`
	Sysinfo       *sysinfoXML  `xml:"sysinfo"`
	OS            osXML        `xml:"os"`
	Features      *featuresXML `xml:"features"`
	CPU           *cpuXML      `xml:"cpu"`
	Clock         *clockXML    `xml:"clock"`
	OnPoweroff    string       `xml:"on_poweroff,omitempty"`
	OnReboot      string       `xml:"on_reboot,omitempty"`
	OnCrash       string       `xml:"on_crash,omitempty"`
	Devices       devicesXML   `xml:"devices"`
}

type metadataXML struct {
	// Inner is written as is (encoding/xml cannot write namespace
	// prefixes); VM is filled when reading.
	Inner string     `xml:",innerxml"`
	VM    *nimbusXML `xml:"https://nimbus.cloud/xmlns/vm/1 vm"`
}

type nimbusXML struct {
	UUID        string        `xml:"uuid"`
	Name        string        `xml:"name"`
	DisplayName string        `xml:"displayName"`
	Meta        []nimbusKVXML `xml:"meta"`
}

type nimbusKVXML struct {
	Key   string `xml:"key,attr"`
	Value string `xml:",chardata"`
}

type memoryXML struct {
	Unit  string `xml:"unit,attr,omitempty"`
	Value int64  `xml:",chardata"`
}

type vcpuXML struct {
	Placement string `xml:"placement,attr,omitempty"`
	Current   int    `xml:"current,attr,omitempty"`
	Value     int    `xml:",chardata"`
}

type cputuneXML struct {
	Shares int `xml:"shares,omitempty"`
}

type sysinfoXML struct {
	Type    string     `xml:"type,attr"`
	Entries []entryXML `xml:"system>entry"`
}

type entryXML struct {
	Name  string `xml:"name,attr"`
	Value string `xml:",chardata"`
}

type osXML struct {
	Type   osTypeXML    `xml:"type"`
	Init   string       `xml:"init,omitempty"`
	Env    []initEnvXML `xml:"initenv"`
	Boot   []bootXML    `xml:"boot"`
	SMBIOS *smbiosXML   `xml:"smbios"`
}

// initEnvXML is an environment variable of a container's init.
type initEnvXML struct {
	Name  string `xml:"name,attr"`
	Value string `xml:",chardata"`
}

type osTypeXML struct {
	Arch    string `xml:"arch,attr,omitempty"`
	Machine string `xml:"machine,attr,omitempty"`
	Value   string `xml:",chardata"`
}

type bootXML struct {
	Dev string `xml:"dev,attr"`
}

type smbiosXML struct {
	Mode string `xml:"mode,attr"`
}

type featuresXML struct {
	ACPI    *struct{} `xml:"acpi"`
	APIC    *struct{} `xml:"apic"`
	PAE     *struct{} `xml:"pae"`
	Privnet *struct{} `xml:"privnet"`
}

type cpuXML struct {
	Mode  string       `xml:"mode,attr,omitempty"`
	Match string       `xml:"match,attr,omitempty"`
	Model *cpuModelXML `xml:"model"`
}

type cpuModelXML struct {
	Fallback string `xml:"fallback,attr,omitempty"`
	Value    string `xml:",chardata"`
}

type clockXML struct {
	Offset string `xml:"offset,attr"`
}

type devicesXML struct {
	Disks       []diskXML       `xml:"disk"`
	Filesystems []filesystemXML `xml:"filesystem"`
	Controllers []controllerXML `xml:"controller"`
	Interfaces  []interfaceXML  `xml:"interface"`
	Serials     []serialXML     `xml:"serial"`
	Consoles    []consoleXML    `xml:"console"`
	Graphics    []graphicsXML   `xml:"graphics"`
	Balloon     *balloonXML     `xml:"memballoon"`
}

type diskXML struct {
	XMLName  xml.Name       `xml:"disk"`
	Type     string         `xml:"type,attr"`
	Device   string         `xml:"device,attr"`
	Driver   *diskDriverXML `xml:"driver"`
	Source   *diskSourceXML `xml:"source"`
	Target   diskTargetXML  `xml:"target"`
	Serial   string         `xml:"serial,omitempty"`
	ReadOnly *struct{}      `xml:"readonly"`
}

type diskDriverXML struct {
	Name string `xml:"name,attr,omitempty"`
	Type string `xml:"type,attr,omitempty"`
}

type diskSourceXML struct {
	File   string `xml:"file,attr,omitempty"`
	Dev    string `xml:"dev,attr,omitempty"`
	Pool   string `xml:"pool,attr,omitempty"`
	Volume string `xml:"volume,attr,omitempty"`
}

type diskTargetXML struct {
	Dev string `xml:"dev,attr"`
	Bus string `xml:"bus,attr,omitempty"`
}

type filesystemXML struct {
	Type       string       `xml:"type,attr"`
	AccessMode string       `xml:"accessmode,attr,omitempty"`
	Driver     *fsDriverXML `xml:"driver"`
	Source     fsSourceXML  `xml:"source"`
	Target     fsTargetXML  `xml:"target"`
	ReadOnly   *struct{}    `xml:"readonly"`
}

type fsDriverXML struct {
	Type   string `xml:"type,attr,omitempty"`
	Format string `xml:"format,attr,omitempty"`
}

type fsSourceXML struct {
	Dir    string `xml:"dir,attr,omitempty"`
	File   string `xml:"file,attr,omitempty"`
	Pool   string `xml:"pool,attr,omitempty"`
	Volume string `xml:"volume,attr,omitempty"`
}

type fsTargetXML struct {
	Dir string `xml:"dir,attr"`
}

type controllerXML struct {
	Type  string `xml:"type,attr"`
	Index string `xml:"index,attr"`
	Model string `xml:"model,attr,omitempty"`
}

type interfaceXML struct {
	XMLName     xml.Name        `xml:"interface"`
	Type        string          `xml:"type,attr"`
	MAC         *macXML         `xml:"mac"`
	Source      ifaceSourceXML  `xml:"source"`
	VLAN        *vlanXML        `xml:"vlan"`
	VirtualPort *virtualPortXML `xml:"virtualport"`
	Model       *modelXML       `xml:"model"`
}

type macXML struct {
	Address string `xml:"address,attr"`
}

type ifaceSourceXML struct {
	Bridge  string `xml:"bridge,attr,omitempty"`
	Network string `xml:"network,attr,omitempty"`
}

type vlanXML struct {
	Tag struct {
		ID int `xml:"id,attr"`
	} `xml:"tag"`
}

type virtualPortXML struct {
	Type string `xml:"type,attr"`
}

type modelXML struct {
	Type string `xml:"type,attr"`
}

type serialXML struct {
	Type   string           `xml:"type,attr"`
	Source *serialSourceXML `xml:"source"`
	Target *serialTargetXML `xml:"target"`
}

type serialSourceXML struct {
	Path   string `xml:"path,attr,omitempty"`
	Append string `xml:"append,attr,omitempty"`
}

type serialTargetXML struct {
	Port int `xml:"port,attr"`
}

type consoleXML struct {
	Type   string            `xml:"type,attr"`
	Target *consoleTargetXML `xml:"target"`
}

type consoleTargetXML struct {
	Type string `xml:"type,attr,omitempty"`
	Port int    `xml:"port,attr"`
}

type graphicsXML struct {
	Type     string      `xml:"type,attr"`
	Port     int         `xml:"port,attr"`
	AutoPort string      `xml:"autoport,attr,omitempty"`
	Listen   string      `xml:"listen,attr,omitempty"`
	Passwd   string      `xml:"passwd,attr,omitempty"`
	Listens  []listenXML `xml:"listen"`
}

type listenXML struct {
	Type    string `xml:"type,attr"`
	Address string `xml:"address,attr,omitempty"`
}

type balloonXML struct {
	Model string `xml:"model,attr"`
}

// libvirtDomainType maps a hypervisor type and whether KVM works to
// libvirt's domain type.
func libvirtDomainType(typ string, kvm bool) string {
	switch typ {
	case hypervisor.TypeLXC:
		return "lxc"
	case hypervisor.TypeXenProject:
		return "xen"
	}
	if kvm {
		return "kvm"
	}
	return "qemu"
}

// guestHostname is what the guest is told its host name is (SMBIOS SKU).
func guestHostname(s hypervisor.VMSpec) string {
	if h := s.Metadata["hostname"]; h != "" {
		return h
	}
	if s.DisplayName != "" {
		return s.DisplayName
	}
	return s.Name
}

// DomainXML renders a VM spec as libvirt domain XML for the given host
// settings. It is pure: the golden tests call it directly.
func DomainXML(spec hypervisor.VMSpec, p domainParams) (string, error) {
	if err := spec.Validate(); err != nil {
		return "", err
	}
	d := domainXML{Type: p.DomainType, Name: spec.Name, UUID: spec.UUID, Title: spec.DisplayName}
	d.Metadata = &metadataXML{Inner: metadataInner(spec)}

	// <memory> is the ceiling the balloon can give back live; <currentMemory>
	// what the guest gets at boot. (<maxMemory> would need guest NUMA cells
	// and DIMM hotplug, which tiny guests and LXC lack.)
	maxMem := spec.MemoryBytes
	if spec.MaxMemoryBytes > maxMem {
		maxMem = spec.MaxMemoryBytes
	}
	d.Memory = &memoryXML{Unit: "KiB", Value: kib(maxMem)}
	d.CurrentMemory = &memoryXML{Unit: "KiB", Value: kib(spec.MemoryBytes)}
	maxCPU := max(spec.VCPUs, spec.MaxVCPUs)
	d.VCPU = &vcpuXML{Placement: "static", Value: maxCPU}
	if maxCPU > spec.VCPUs {
		d.VCPU.Current = spec.VCPUs
	}
	if spec.MHz > 0 && p.DomainType != "xen" {
		// CloudStack's weight: speed times vCPUs, relative to other guests.
		d.CPUTune = &cputuneXML{Shares: spec.MHz * spec.VCPUs}
	}
	d.OnPoweroff, d.OnReboot, d.OnCrash = "destroy", "restart", "destroy"

	switch p.Type {
	case hypervisor.TypeLXC:
		if err := lxcDomain(&d, spec); err != nil {
			return "", err
		}
	default:
		if err := hvmDomain(&d, spec, p); err != nil {
			return "", err
		}
	}
	if err := nics(&d, spec, p); err != nil {
		return "", err
	}
	out, err := xml.MarshalIndent(d, "", "  ")
	if err != nil {
		return "", fmt.Errorf("domain xml of %s: %w", spec.Name, err)
	}
	return string(out) + "\n", nil
}

func kib(b int64) int64 { return (b + 1023) / 1024 }

func metadataInner(spec hypervisor.VMSpec) string {
	var b strings.Builder
	b.WriteString(`<nimbus:vm xmlns:nimbus="` + MetadataNS + `">`)
	el := func(name, v string) {
		b.WriteString("<nimbus:" + name + ">" + escape(v) + "</nimbus:" + name + ">")
	}
	el("uuid", spec.UUID)
	el("name", spec.Name)
	if spec.DisplayName != "" {
		el("displayName", spec.DisplayName)
	}
	keys := make([]string, 0, len(spec.Metadata))
	for k := range spec.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString(`<nimbus:meta key="` + escape(k) + `">` + escape(spec.Metadata[k]) + `</nimbus:meta>`)
	}
	b.WriteString("</nimbus:vm>")
	return b.String()
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// hvmDomain fills the parts of a QEMU/KVM or Xen HVM guest.
func hvmDomain(d *domainXML, spec hypervisor.VMSpec, p domainParams) error {
	xen := p.DomainType == "xen"
	d.OS.Type = osTypeXML{Arch: p.Arch, Machine: p.Machine, Value: "hvm"}
	if xen {
		d.OS.Type.Machine = "xenfv"
	}
	for _, b := range bootOrder(spec) {
		d.OS.Boot = append(d.OS.Boot, bootXML{Dev: b})
	}
	d.OS.SMBIOS = &smbiosXML{Mode: "sysinfo"}
	d.Sysinfo = &sysinfoXML{Type: "smbios", Entries: []entryXML{
		{Name: "manufacturer", Value: "Nimbus"},
		{Name: "product", Value: productName(p.Type)},
		{Name: "serial", Value: spec.UUID},
		{Name: "uuid", Value: spec.UUID},
		{Name: "sku", Value: guestHostname(spec)},
	}}
	d.Features = &featuresXML{ACPI: &struct{}{}, APIC: &struct{}{}, PAE: &struct{}{}}
	d.CPU = cpuOf(p)
	d.Clock = &clockXML{Offset: "utc"}

	virtioSCSI := false
	for _, disk := range spec.Disks {
		x, err := diskOf(disk, p)
		if err != nil {
			return fmt.Errorf("vm %s: %w", spec.Name, err)
		}
		if x.Target.Bus == "scsi" {
			virtioSCSI = true
		}
		d.Devices.Disks = append(d.Devices.Disks, x)
	}
	if _, ok := spec.CDROM(); !ok {
		// An empty CD-ROM drive, so an ISO can be inserted later.
		d.Devices.Disks = append(d.Devices.Disks, cdromOf(hypervisor.Disk{CDROM: true}))
	}
	if virtioSCSI {
		d.Devices.Controllers = append(d.Devices.Controllers, controllerXML{Type: "scsi", Index: "0", Model: "virtio-scsi"})
	}
	dir := p.ConsoleDir
	if dir == "" {
		dir = DefaultConsoleDir
	}
	d.Devices.Serials = []serialXML{{Type: "file",
		Source: &serialSourceXML{Path: ConsoleLogPath(dir, spec.Name), Append: "on"},
		Target: &serialTargetXML{Port: 0}}}
	listen := p.VNCListen
	if listen == "" {
		listen = "0.0.0.0"
	}
	d.Devices.Graphics = []graphicsXML{{Type: "vnc", Port: -1, AutoPort: "yes", Listen: listen, Passwd: spec.ConsolePassword,
		Listens: []listenXML{{Type: "address", Address: listen}}}}
	if !xen {
		d.Devices.Balloon = &balloonXML{Model: "virtio"}
	}
	return nil
}

func productName(typ string) string {
	switch typ {
	case hypervisor.TypeXenProject:
		return "Nimbus Xen"
	}
	return "Nimbus KVM"
}

// ConsoleLogPath is the serial console log of a VM.
func ConsoleLogPath(dir, vmName string) string {
	return path.Join(dir, vmName+".log")
}

func cpuOf(p domainParams) *cpuXML {
	switch p.CPUMode {
	case "host-model", "host-passthrough":
		if p.DomainType == "qemu" {
			// TCG cannot pass the host CPU through; QEMU's default model it is.
			return nil
		}
		return &cpuXML{Mode: p.CPUMode}
	case "custom":
		if p.CPUModel == "" {
			return nil
		}
		return &cpuXML{Mode: "custom", Match: "exact", Model: &cpuModelXML{Fallback: "allow", Value: p.CPUModel}}
	}
	return nil
}

func bootOrder(spec hypervisor.VMSpec) []string {
	var out []string
	seen := map[string]bool{}
	for _, b := range spec.BootOrder {
		dev := map[hypervisor.BootDevice]string{hypervisor.BootDisk: "hd", hypervisor.BootCDROM: "cdrom", hypervisor.BootNetwork: "network"}[b]
		if dev != "" && !seen[dev] {
			seen[dev] = true
			out = append(out, dev)
		}
	}
	if len(out) == 0 {
		out = []string{"hd"}
		if cd, ok := spec.CDROM(); ok && cd.Path != "" {
			// A VM deployed from an ISO installs from it (its disk is
			// empty), and an ISO attached is booted from, as CloudStack does.
			out = []string{"cdrom", "hd"}
		}
	}
	return out
}

// diskTarget names the guest device of a CloudStack device id: vda for the
// root disk (0), vdb for 1, and so on, so a disk keeps its name across
// redefinitions and attach/detach finds it.
func diskTarget(bus string, deviceID int) string {
	prefix := map[string]string{"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd", "xen": "xvd"}[bus]
	if prefix == "" {
		prefix = "vd"
	}
	return prefix + letters(deviceID)
}

// letters is a, b, ..., z, aa, ab, ... as libvirt names disks.
func letters(i int) string {
	s := ""
	for i++; i > 0; i = (i - 1) / 26 {
		s = string(rune('a'+(i-1)%26)) + s
	}
	return s
}

func diskFormat(d hypervisor.Disk) string {
	if d.Format != "" {
		return strings.ToLower(d.Format)
	}
	switch strings.ToLower(filepath.Ext(d.Path)) {
	case ".qcow2", ".qcow":
		return "qcow2"
	case ".raw", ".img", ".iso":
		return "raw"
	}
	if d.Pool != "" {
		// Nimbus's KVM volumes are qcow2 overlays on their template.
		return "qcow2"
	}
	return "raw"
}

// diskOf renders one disk. Disk.Pool names the libvirt pool (the Nimbus
// pool's UUID) and Disk.Path the volume in it; a disk without a pool and
// an absolute path is a plain file (or block device under /dev).
func diskOf(d hypervisor.Disk, p domainParams) (diskXML, error) {
	if d.CDROM {
		return cdromOf(d), nil
	}
	bus := d.Bus
	if bus == "" {
		bus = "virtio"
		if p.DomainType == "xen" {
			bus = "xen"
		}
	}
	switch bus {
	case "virtio", "scsi", "sata", "ide", "xen":
	default:
		return diskXML{}, hypervisor.NewError(hypervisor.ErrInvalid, "disk %s: bus %q is not virtio, scsi, sata, ide or xen", d.Path, d.Bus)
	}
	x := diskXML{Device: "disk", Driver: &diskDriverXML{Name: "qemu", Type: diskFormat(d)}, Target: targetOf(bus, d.DeviceID)}
	switch {
	case d.Pool != "":
		x.Type = "volume"
		x.Source = &diskSourceXML{Pool: d.Pool, Volume: d.Path}
	case strings.HasPrefix(d.Path, "/dev/"):
		x.Type = "block"
		x.Source = &diskSourceXML{Dev: d.Path}
	case filepath.IsAbs(d.Path):
		x.Type = "file"
		x.Source = &diskSourceXML{File: d.Path}
	default:
		return diskXML{}, hypervisor.NewError(hypervisor.ErrInvalid, "disk %q: no pool and not an absolute path", d.Path)
	}
	if d.VolumeID != "" {
		x.Serial = diskSerial(d.VolumeID)
	}
	if d.ReadOnly {
		x.ReadOnly = &struct{}{}
	}
	return x, nil
}

func targetOf(bus string, id int) diskTargetXML {
	return diskTargetXML{Dev: diskTarget(bus, id), Bus: bus}
}

// diskSerial is the serial the guest sees (/dev/disk/by-id): the volume
// UUID without dashes, cut to QEMU's 20 characters as CloudStack does.
func diskSerial(volumeID string) string {
	s := strings.ReplaceAll(volumeID, "-", "")
	if len(s) > 20 {
		s = s[:20]
	}
	return s
}

// cdromOf renders a CD-ROM drive: IDE (every guest kernel has a driver
// for the PC machine's IDE controller; the drive stays for media changes,
// which IDE allows live), hdc unless a device id says otherwise, holding
// the ISO volume of a pool, or a file, or nothing.
func cdromOf(d hypervisor.Disk) diskXML {
	x := diskXML{Type: "file", Device: "cdrom", Driver: &diskDriverXML{Name: "qemu", Type: "raw"},
		Target: diskTargetXML{Dev: "hdc", Bus: "ide"}, ReadOnly: &struct{}{}}
	if d.DeviceID > 0 {
		x.Target.Dev = diskTarget("ide", d.DeviceID)
	}
	switch {
	case d.Path == "":
	case d.Pool != "":
		x.Type = "volume"
		x.Source = &diskSourceXML{Pool: d.Pool, Volume: d.Path}
	default:
		x.Source = &diskSourceXML{File: d.Path}
	}
	return x
}

// loNameSize is the kernel's LO_NAME_SIZE, the room for a loop device's
// backing file name.
const loNameSize = 64

// lxcDomain fills the parts of a container: an init to run and a root
// filesystem instead of disks.
func lxcDomain(d *domainXML, spec hypervisor.VMSpec) error {
	init := spec.Metadata["lxc.init"]
	if init == "" {
		init = "/sbin/init"
	}
	d.OS = osXML{Type: osTypeXML{Value: "exe"}, Init: init}
	if h := spec.Metadata["hostname"]; h != "" {
		// What a VM reads from SMBIOS, a container's init reads from its
		// environment: the name the user gave it.
		d.OS.Env = []initEnvXML{{Name: "NIMBUS_HOSTNAME", Value: h}}
	}
	// Its own network namespace even without NICs: a container must not
	// share the host's network.
	d.Features = &featuresXML{Privnet: &struct{}{}}
	for i, disk := range spec.Disks {
		if disk.CDROM {
			continue
		}
		target := "/"
		if i > 0 || disk.DeviceID > 0 {
			target = "/mnt/disk" + strconv.Itoa(disk.DeviceID)
		}
		fs := filesystemXML{Target: fsTargetXML{Dir: target}}
		switch {
		case disk.Pool != "":
			// libvirt's schema has no pool volumes for container
			// filesystems: the driver resolves them to paths first.
			return hypervisor.NewError(hypervisor.ErrInvalid, "container %s: disk %s in pool %s: not resolved to a path", spec.Name, disk.Path, disk.Pool)
		case !filepath.IsAbs(disk.Path):
			return hypervisor.NewError(hypervisor.ErrInvalid, "container %s: disk %q: no pool and not an absolute path", spec.Name, disk.Path)
		case disk.Format == "" || disk.Format == "dir":
			// A directory tree: bind-mounted.
			fs.Type, fs.AccessMode = "mount", "passthrough"
			fs.Source = fsSourceXML{Dir: disk.Path}
		default:
			// An image file: loop (raw) or qemu-nbd (qcow2).
			fs.Type, fs.AccessMode = "file", "passthrough"
			drv := &fsDriverXML{Type: "loop", Format: "raw"}
			if f := diskFormat(disk); f != "raw" {
				drv = &fsDriverXML{Type: "nbd", Format: f}
			} else if len(disk.Path) >= loNameSize {
				// libvirt_lxc copies the path into the loop device's
				// 64-byte name and fails with "Unable to set backing file".
				return hypervisor.NewError(hypervisor.ErrInvalid, "container %s: image %s: libvirt's LXC driver loop-mounts only paths under %d characters (put the pool at a shorter path)",
					spec.Name, disk.Path, loNameSize)
			}
			fs.Driver = drv
			fs.Source = fsSourceXML{File: disk.Path}
		}
		if disk.ReadOnly {
			fs.ReadOnly = &struct{}{}
		}
		d.Devices.Filesystems = append(d.Devices.Filesystems, fs)
	}
	d.Devices.Consoles = []consoleXML{{Type: "pty", Target: &consoleTargetXML{Type: "lxc", Port: 0}}}
	return nil
}

// VLANBridge names the Linux bridge of a VLAN on a traffic label's bridge,
// as CloudStack's KVM agent names them (brX-<vlan>): <label>-<vlan>.
func VLANBridge(label string, vlan int) string { return label + "-" + strconv.Itoa(vlan) }

// nics renders the interfaces. Untagged NICs join the bridge the traffic
// label names. Tagged ones join that bridge with a VLAN tag when it is Open
// vSwitch, else the Linux bridge <label>-<vlan>, which must exist on the
// host (libvirt cannot create it; DefineVM checks).
func nics(d *domainXML, spec hypervisor.VMSpec, p domainParams) error {
	for _, n := range spec.NICs {
		if n.Label == "" {
			return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s: nic %d has no traffic label (bridge)", spec.Name, n.DeviceID)
		}
		x := interfaceXML{Type: "bridge", Source: ifaceSourceXML{Bridge: n.Label}}
		if n.MAC != "" {
			x.MAC = &macXML{Address: strings.ToLower(n.MAC)}
		}
		if n.VLAN != 0 {
			if n.VLAN < 0 || n.VLAN > 4094 {
				return hypervisor.NewError(hypervisor.ErrInvalid, "vm %s: vlan %d out of 1-4094", spec.Name, n.VLAN)
			}
			if p.OVS {
				x.VirtualPort = &virtualPortXML{Type: "openvswitch"}
				x.VLAN = &vlanXML{}
				x.VLAN.Tag.ID = n.VLAN
			} else {
				x.Source.Bridge = VLANBridge(n.Label, n.VLAN)
			}
		}
		switch {
		case p.DomainType == "lxc":
		case p.DomainType == "xen":
			if n.Model != "" && n.Model != "virtio" {
				x.Model = &modelXML{Type: n.Model}
			}
		default:
			m := n.Model
			if m == "" {
				m = "virtio"
			}
			x.Model = &modelXML{Type: m}
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, x)
	}
	return nil
}

// diskDeviceXML renders a disk for attach/detach.
func diskDeviceXML(x diskXML) (string, error) {
	out, err := xml.MarshalIndent(x, "", "  ")
	return string(out), err
}

// parseDomain reads libvirt's domain XML.
func parseDomain(s string) (*domainXML, error) {
	var d domainXML
	if err := xml.Unmarshal([]byte(s), &d); err != nil {
		return nil, fmt.Errorf("domain xml: %w", err)
	}
	return &d, nil
}

// bytesOf converts a libvirt memory element to bytes.
func bytesOf(m *memoryXML) int64 {
	if m == nil {
		return 0
	}
	mult := map[string]int64{"": 1024, "k": 1024, "KiB": 1024, "b": 1, "bytes": 1, "M": 1 << 20, "MiB": 1 << 20,
		"G": 1 << 30, "GiB": 1 << 30, "KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000}[m.Unit]
	if mult == 0 {
		mult = 1024
	}
	return m.Value * mult
}

// info turns a parsed domain into what the driver reports.
func (d *domainXML) info(state hypervisor.State) hypervisor.VMInfo {
	vi := hypervisor.VMInfo{Name: d.Name, UUID: d.UUID, State: state, MemoryBytes: bytesOf(d.CurrentMemory)}
	if vi.MemoryBytes == 0 {
		vi.MemoryBytes = bytesOf(d.Memory)
	}
	if d.VCPU != nil {
		vi.VCPUs = d.VCPU.Value
		if d.VCPU.Current > 0 {
			vi.VCPUs = d.VCPU.Current
		}
	}
	if d.CPUTune != nil && vi.VCPUs > 0 {
		vi.MHz = d.CPUTune.Shares / vi.VCPUs
	}
	for _, x := range d.Devices.Disks {
		vi.Disks = append(vi.Disks, x.disk())
	}
	for _, f := range d.Devices.Filesystems {
		disk := hypervisor.Disk{Pool: f.Source.Pool, Path: f.Source.Volume}
		if disk.Path == "" {
			disk.Path = f.Source.Dir + f.Source.File
		}
		vi.Disks = append(vi.Disks, disk)
	}
	for i, n := range d.Devices.Interfaces {
		nic := hypervisor.NIC{Label: n.Source.Bridge, DeviceID: i}
		if n.MAC != nil {
			nic.MAC = n.MAC.Address
		}
		if n.Model != nil {
			nic.Model = n.Model.Type
		}
		if n.VLAN != nil {
			nic.VLAN = n.VLAN.Tag.ID
		}
		vi.NICs = append(vi.NICs, nic)
	}
	if m := d.Metadata; m != nil && m.VM != nil {
		vi.Metadata = map[string]string{}
		for _, kv := range m.VM.Meta {
			vi.Metadata[kv.Key] = kv.Value
		}
		if vi.UUID == "" {
			vi.UUID = m.VM.UUID
		}
	}
	return vi
}

// disk turns a disk element back into a hypervisor.Disk.
func (x diskXML) disk() hypervisor.Disk {
	d := hypervisor.Disk{Bus: x.Target.Bus, CDROM: x.Device == "cdrom", ReadOnly: x.ReadOnly != nil}
	if x.Driver != nil {
		d.Format = x.Driver.Type
	}
	if s := x.Source; s != nil {
		switch {
		case s.Volume != "":
			d.Pool, d.Path = s.Pool, s.Volume
		case s.File != "":
			d.Path = s.File
		default:
			d.Path = s.Dev
		}
	}
	d.DeviceID = deviceIDOf(x.Target.Dev)
	return d
}

// deviceIDOf inverts diskTarget: vdb is 1.
func deviceIDOf(dev string) int {
	var suffix string
	switch {
	case strings.HasPrefix(dev, "xvd"):
		suffix = dev[3:]
	case len(dev) > 2:
		suffix = dev[2:]
	default:
		return 0
	}
	n := 0
	for _, r := range suffix {
		if r < 'a' || r > 'z' {
			return 0
		}
		n = n*26 + int(r-'a'+1)
	}
	return n - 1
}
