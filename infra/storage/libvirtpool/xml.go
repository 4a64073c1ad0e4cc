package libvirtpool

import (
	"encoding/xml"
	"fmt"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// CloudStack pool types (models.Pool*) this driver turns into libvirt pools.
const (
	typeFilesystem       = "Filesystem"
	typeSharedMountPoint = "SharedMountPoint"
	typeNFS              = "NetworkFilesystem"
	typeRBD              = "RBD"
	typeISCSI            = "Iscsi"
)

// libvirt pool kinds.
const (
	kindDir   = "dir"
	kindNetfs = "netfs"
	kindRBD   = "rbd"
	kindISCSI = "iscsi"
)

// poolXML is libvirt's <pool> (https://libvirt.org/formatstorage.html).
type poolXML struct {
	XMLName xml.Name    `xml:"pool"`
	Type    string      `xml:"type,attr"`
	Name    string      `xml:"name"`
	UUID    string      `xml:"uuid,omitempty"`
	Source  *poolSource `xml:"source,omitempty"`
	Target  *poolTarget `xml:"target,omitempty"`
}

type poolSource struct {
	Hosts    []sourceHost  `xml:"host,omitempty"`
	Dir      *pathAttr     `xml:"dir,omitempty"`
	Device   *pathAttr     `xml:"device,omitempty"`
	Name     string        `xml:"name,omitempty"`
	Format   *typeAttr     `xml:"format,omitempty"`
	Protocol *protocolAttr `xml:"protocol,omitempty"`
	Auth     *poolAuth     `xml:"auth,omitempty"`
}

type sourceHost struct {
	Name string `xml:"name,attr"`
	Port int    `xml:"port,attr,omitempty"`
}

type pathAttr struct {
	Path string `xml:"path,attr"`
}

type typeAttr struct {
	Type string `xml:"type,attr"`
}

type protocolAttr struct {
	Version string `xml:"ver,attr"`
}

type poolAuth struct {
	Type     string    `xml:"type,attr"`
	Username string    `xml:"username,attr"`
	Secret   secretRef `xml:"secret"`
}

type secretRef struct {
	UUID  string `xml:"uuid,attr,omitempty"`
	Usage string `xml:"usage,attr,omitempty"`
}

type poolTarget struct {
	Path string `xml:"path"`
}

// secretXML is libvirt's <secret>: the Ceph key of an RBD pool or the CHAP
// password of an iSCSI one, kept by libvirtd on the host, never in the pool.
type secretXML struct {
	XMLName     xml.Name    `xml:"secret"`
	Ephemeral   string      `xml:"ephemeral,attr"`
	Private     string      `xml:"private,attr"`
	UUID        string      `xml:"uuid"`
	Description string      `xml:"description,omitempty"`
	Usage       secretUsage `xml:"usage"`
}

type secretUsage struct {
	Type   string `xml:"type,attr"`
	Name   string `xml:"name,omitempty"`
	Target string `xml:"target,omitempty"`
}

// poolDef is what a Nimbus pool becomes on a libvirt host.
type poolDef struct {
	Pool   poolXML
	Secret *secretXML // nil when the pool needs none
	Value  []byte     // the secret's value
}

// Kind is the libvirt pool type.
func (d poolDef) Kind() string { return d.Pool.Type }

// fileBased tells whether volumes are files (qcow2 overlays work) rather
// than block devices or RBD images (raw only).
func (d poolDef) fileBased() bool { return d.Pool.Type == kindDir || d.Pool.Type == kindNetfs }

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// defaultMountRoot is where NFS pools are mounted on hosts, as CloudStack's
// KVM agent does (/mnt/<pool uuid>); a pool detail "mountpoint" overrides it.
const defaultMountRoot = "/mnt"

// buildPoolDef turns a Nimbus pool into its libvirt pool (named by the
// pool's inventory UUID, which is also the libvirt pool UUID so that a
// second define is an update) and, for RBD and CHAP-authenticated iSCSI,
// the secret holding its key.
func buildPoolDef(p storage.Pool) (poolDef, error) {
	bad := func(format string, args ...any) (poolDef, error) {
		return poolDef{}, hypervisor.NewError(storage.ErrInvalid, "pool %s: "+format, append([]any{p.ID}, args...)...)
	}
	if p.ID == "" {
		return bad("no id")
	}
	d := poolDef{Pool: poolXML{Name: p.ID}}
	if uuidRE.MatchString(p.ID) {
		d.Pool.UUID = strings.ToLower(p.ID)
	}
	u, err := parseURL(p.URL)
	if err != nil {
		return bad("url %q: %v", p.URL, err)
	}
	port := 0
	if u.Port() != "" {
		if port, err = strconv.Atoi(u.Port()); err != nil {
			return bad("url %q: port: %v", p.URL, err)
		}
	}
	switch p.Type {
	case typeFilesystem, typeSharedMountPoint:
		dir := filepath.Clean(u.Path)
		if u.Path == "" || dir == "/" || !filepath.IsAbs(dir) {
			return bad("url %q: want an absolute directory (file:///dir)", p.URL)
		}
		d.Pool.Type = kindDir
		d.Pool.Target = &poolTarget{Path: dir}
	case typeNFS:
		export := filepath.Clean(u.Path)
		if u.Hostname() == "" || u.Path == "" || export == "/" {
			return bad("url %q: want nfs://server/export", p.URL)
		}
		mnt := p.Details["mountpoint"]
		if mnt == "" {
			mnt = filepath.Join(defaultMountRoot, p.ID)
		}
		d.Pool.Type = kindNetfs
		d.Pool.Source = &poolSource{
			Hosts:  []sourceHost{{Name: u.Hostname(), Port: nonDefault(port, 2049)}},
			Dir:    &pathAttr{Path: export},
			Format: &typeAttr{Type: "nfs"},
		}
		if v := p.Details["nfsvers"]; v != "" {
			d.Pool.Source.Protocol = &protocolAttr{Version: v}
		}
		d.Pool.Target = &poolTarget{Path: mnt}
	case typeRBD:
		rbdPool := strings.Trim(u.Path, "/")
		if u.Hostname() == "" || rbdPool == "" {
			return bad("url %q: want rbd://user@monitor/pool", p.URL)
		}
		user := p.Username
		if user == "" && u.User != nil {
			user = u.User.Username()
		}
		d.Pool.Type = kindRBD
		d.Pool.Source = &poolSource{Name: rbdPool}
		for _, mon := range strings.Split(u.Hostname(), ",") {
			d.Pool.Source.Hosts = append(d.Pool.Source.Hosts, sourceHost{Name: mon, Port: nonDefault(port, 6789)})
		}
		if user != "" {
			if p.Password == "" {
				return bad("rbd user %s has no key", user)
			}
			d.Pool.Source.Auth = &poolAuth{Type: "ceph", Username: user, Secret: secretRef{UUID: secretUUID(p.ID)}}
			d.Secret = &secretXML{Ephemeral: "no", Private: "yes", UUID: secretUUID(p.ID),
				Description: "Nimbus primary storage " + p.ID, Usage: secretUsage{Type: "ceph", Name: "nimbus/" + p.ID}}
			// Ceph keys are base64 of the raw key, which is what libvirt stores.
			if d.Value, err = decodeCephKey(p.Password); err != nil {
				return bad("rbd key of user %s: %v", user, err)
			}
		}
	case typeISCSI:
		parts := strings.Split(strings.Trim(u.Path, "/"), "/")
		if u.Hostname() == "" || parts[0] == "" {
			return bad("url %q: want iscsi://target/iqn[/lun]", p.URL)
		}
		d.Pool.Type = kindISCSI
		d.Pool.Source = &poolSource{
			Hosts:  []sourceHost{{Name: u.Hostname(), Port: nonDefault(port, 3260)}},
			Device: &pathAttr{Path: parts[0]},
		}
		if p.Username != "" {
			d.Pool.Source.Auth = &poolAuth{Type: "chap", Username: p.Username, Secret: secretRef{UUID: secretUUID(p.ID)}}
			d.Secret = &secretXML{Ephemeral: "no", Private: "yes", UUID: secretUUID(p.ID),
				Description: "Nimbus primary storage " + p.ID, Usage: secretUsage{Type: "iscsi", Target: "nimbus/" + p.ID}}
			d.Value = []byte(p.Password)
		}
		d.Pool.Target = &poolTarget{Path: "/dev/disk/by-path"}
	case "":
		return bad("no pool type")
	default:
		return poolDef{}, hypervisor.NewError(storage.ErrNotSupported, "pool %s: type %s is not served by libvirt (want %s, %s, %s, %s or %s)",
			p.ID, p.Type, typeFilesystem, typeSharedMountPoint, typeNFS, typeRBD, typeISCSI)
	}
	return d, nil
}

// parseURL reads a pool URL; a bare absolute path is a directory.
func parseURL(raw string) (*url.URL, error) {
	if strings.HasPrefix(raw, "/") {
		return &url.URL{Scheme: "file", Path: raw}, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "" {
		return nil, fmt.Errorf("no scheme")
	}
	return u, nil
}

func nonDefault(port, def int) int {
	if port == def {
		return 0
	}
	return port
}

// secretUUID is the libvirt secret of a pool: its own UUID, so that it is
// found again without any state.
func secretUUID(poolID string) string { return strings.ToLower(poolID) }

// decodeCephKey turns a Ceph key (base64, as `ceph auth get-key` prints)
// into the raw bytes libvirt keeps.
func decodeCephKey(key string) ([]byte, error) {
	return base64Std.DecodeString(strings.TrimSpace(key))
}

// volumeXML is libvirt's <volume>.
type volumeXML struct {
	XMLName      xml.Name    `xml:"volume"`
	Type         string      `xml:"type,attr,omitempty"`
	Name         string      `xml:"name"`
	Key          string      `xml:"key,omitempty"`
	Capacity     sizeXML     `xml:"capacity"`
	Allocation   *sizeXML    `xml:"allocation,omitempty"`
	Physical     *sizeXML    `xml:"physical,omitempty"`
	Target       volTarget   `xml:"target"`
	BackingStore *backingXML `xml:"backingStore,omitempty"`
}

type sizeXML struct {
	Unit  string `xml:"unit,attr,omitempty"`
	Value uint64 `xml:",chardata"`
}

type volTarget struct {
	Path   string    `xml:"path,omitempty"`
	Format *typeAttr `xml:"format,omitempty"`
	Compat string    `xml:"compat,omitempty"`
}

type backingXML struct {
	Path   string    `xml:"path"`
	Format *typeAttr `xml:"format,omitempty"`
}

// bytes reads a size in any of libvirt's units.
func (s sizeXML) bytes() int64 {
	mult := map[string]uint64{"": 1, "b": 1, "bytes": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9, "t": 1 << 40, "tib": 1 << 40, "tb": 1e12}[strings.ToLower(s.Unit)]
	if mult == 0 {
		mult = 1
	}
	return int64(s.Value * mult)
}

// newVolumeXML describes a volume to create: qcow2 files get compat 1.1
// (libvirt would otherwise ask qemu-img for the 0.10 format of 2011).
func newVolumeXML(name, format string, capacity int64, backing *backingXML) volumeXML {
	v := volumeXML{Name: name, Capacity: sizeXML{Unit: "bytes", Value: uint64(max(capacity, 0))}, BackingStore: backing}
	if format != "" {
		v.Target.Format = &typeAttr{Type: format}
	}
	if format == formatQCOW2 {
		v.Target.Compat = "1.1"
	}
	return v
}

// backupXML is libvirt's <domainbackup> in push mode: a point-in-time full
// copy of one disk of a running domain, written by QEMU to a file.
type backupXML struct {
	XMLName xml.Name     `xml:"domainbackup"`
	Mode    string       `xml:"mode,attr"`
	Disks   []backupDisk `xml:"disks>disk"`
}

type backupDisk struct {
	Name   string    `xml:"name,attr"`
	Backup string    `xml:"backup,attr,omitempty"`
	Type   string    `xml:"type,attr,omitempty"`
	Target *pathFile `xml:"target,omitempty"`
	Driver *typeAttr `xml:"driver,omitempty"`
}

type pathFile struct {
	File string `xml:"file,attr"`
}

func newBackupXML(disk, file string) backupXML {
	return backupXML{Mode: "push", Disks: []backupDisk{{Name: disk, Type: "file", Target: &pathFile{File: file}, Driver: &typeAttr{Type: formatQCOW2}}}}
}

func parseVolumeXML(x string) (volumeXML, error) {
	var v volumeXML
	return v, xmlUnmarshal(x, &v)
}

func xmlUnmarshal(x string, v any) error { return xml.Unmarshal([]byte(x), v) }

// render marshals a libvirt document, indented.
func render(v any) (string, error) {
	b, err := xml.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return string(b) + "\n", nil
}

// domainDisks is the part of a domain's XML that says which volumes it uses.
type domainDisks struct {
	Name  string `xml:"name"`
	UUID  string `xml:"uuid"`
	Disks []struct {
		Type   string `xml:"type,attr"`
		Device string `xml:"device,attr"`
		Source struct {
			Pool   string `xml:"pool,attr"`
			Volume string `xml:"volume,attr"`
			File   string `xml:"file,attr"`
			Dev    string `xml:"dev,attr"`
			Name   string `xml:"name,attr"`
		} `xml:"source"`
		Target struct {
			Dev string `xml:"dev,attr"`
		} `xml:"target"`
	} `xml:"devices>disk"`
}

// diskUsing returns the target device (vda...) through which the domain
// uses the volume (by pool and name, or by its path), or "".
func (d domainDisks) diskUsing(pool, volume, path string) string {
	for _, disk := range d.Disks {
		s := disk.Source
		if (s.Pool == pool && s.Volume == volume) || (path != "" && (s.File == path || s.Dev == path || s.Name == path)) {
			return disk.Target.Dev
		}
	}
	return ""
}
