package sim

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/hypervisor/sim/simkit"
)

// The simulator keeps each VM as its spec encoded in this compact binary
// form: the same bytes are the VM's memory footprint, its journal record
// and its snapshot entry, so nothing is encoded twice and a reopen does not
// decode specs at all. TestSpecCodecCoversEveryField fails when VMSpec
// gains a field this codec does not carry.

const specVersion = 1

var errShort = errors.New("simulator record truncated")

type encoder struct{ b []byte }

func (e *encoder) byte(v byte)     { e.b = append(e.b, v) }
func (e *encoder) int(v int64)     { e.b = binary.AppendVarint(e.b, v) }
func (e *encoder) uint(v uint64)   { e.b = binary.AppendUvarint(e.b, v) }
func (e *encoder) str(s string)    { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *encoder) bytes(b []byte)  { e.uint(uint64(len(b))); e.b = append(e.b, b...) }
func (e *encoder) bool(v bool)     { e.byte(packFlags(v)) }
func (e *encoder) flags(v ...bool) { e.byte(packFlags(v...)) }

func packFlags(v ...bool) byte {
	var f byte
	for i, b := range v {
		if b {
			f |= 1 << i
		}
	}
	return f
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// raw returns the next length-prefixed bytes without copying.
func (d *decoder) raw() []byte {
	n := d.uint()
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.raw()) }
func (d *decoder) bool() bool  { return d.byte() != 0 }

// count reads a slice length, bounded by what is left (each element takes
// at least one byte), so a corrupt length cannot allocate wildly.
func (d *decoder) count() int {
	n := d.uint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

// encodeSpec encodes a VM spec; the first fields (name, uuid, sizes) are
// what specHead reads without decoding the rest.
func encodeSpec(s *hypervisor.VMSpec) []byte {
	e := encoder{b: make([]byte, 0, 256)}
	e.byte(specVersion)
	e.str(s.Name)
	e.str(s.UUID)
	e.int(int64(s.VCPUs))
	e.int(int64(s.MHz))
	e.int(s.MemoryBytes)
	e.str(s.DisplayName)
	e.int(int64(s.MaxVCPUs))
	e.int(s.MaxMemoryBytes)
	e.str(s.OSType)
	e.uint(uint64(len(s.Disks)))
	for _, d := range s.Disks {
		e.str(d.VolumeID)
		e.str(d.Pool)
		e.str(d.Path)
		e.str(d.Format)
		e.int(d.SizeBytes)
		e.int(int64(d.DeviceID))
		e.str(d.Bus)
		e.flags(d.CDROM, d.ReadOnly)
	}
	e.uint(uint64(len(s.NICs)))
	for _, n := range s.NICs {
		e.str(n.MAC)
		e.str(n.Label)
		e.int(int64(n.VLAN))
		e.str(n.IP)
		e.str(n.Netmask)
		e.str(n.Gateway)
		e.int(int64(n.DeviceID))
		e.str(n.Model)
		e.bool(n.Default)
	}
	e.uint(uint64(len(s.BootOrder)))
	for _, b := range s.BootOrder {
		e.str(string(b))
	}
	e.str("") // was the ISO's path; the CD-ROM is one of Disks now
	e.str(s.UserData)
	e.str(s.ConsolePassword)
	e.uint(uint64(len(s.Metadata)))
	for _, k := range slices.Sorted(maps.Keys(s.Metadata)) {
		e.str(k)
		e.str(s.Metadata[k])
	}
	return slices.Clip(e.b)
}

// specHead is what the simulator needs of a VM without decoding its spec.
type specHead struct {
	name  []byte // aliases the encoded spec
	uuid  []byte
	vcpus int
	mhz   int
	mem   int64
}

func readHead(d *decoder) specHead {
	if v := d.byte(); v != specVersion && d.err == nil {
		d.err = errors.New("simulator vm spec: unknown version")
	}
	return specHead{name: d.raw(), uuid: d.raw(), vcpus: int(d.int()), mhz: int(d.int()), mem: d.int()}
}

// specName returns the name of an encoded spec (aliasing it) without
// decoding the rest.
func specName(b []byte) []byte {
	if len(b) < 2 {
		return nil
	}
	n, k := binary.Uvarint(b[1:])
	if k <= 0 || uint64(len(b)-1-k) < n {
		return nil
	}
	return b[1+k : 1+k+int(n)]
}

func decodeHead(b []byte) (specHead, error) {
	d := decoder{b: b}
	h := readHead(&d)
	return h, d.err
}

func decodeSpec(b []byte) (*hypervisor.VMSpec, error) {
	d := decoder{b: b}
	h := readHead(&d)
	s := &hypervisor.VMSpec{Name: string(h.name), UUID: string(h.uuid), VCPUs: h.vcpus, MHz: h.mhz, MemoryBytes: h.mem}
	s.DisplayName = d.str()
	s.MaxVCPUs = int(d.int())
	s.MaxMemoryBytes = d.int()
	s.OSType = d.str()
	if n := d.count(); n > 0 {
		s.Disks = make([]hypervisor.Disk, n)
		for i := range s.Disks {
			k := &s.Disks[i]
			k.VolumeID, k.Pool, k.Path, k.Format = d.str(), d.str(), d.str(), d.str()
			k.SizeBytes, k.DeviceID, k.Bus = d.int(), int(d.int()), d.str()
			f := d.byte()
			k.CDROM, k.ReadOnly = f&1 != 0, f&2 != 0
		}
	}
	if n := d.count(); n > 0 {
		s.NICs = make([]hypervisor.NIC, n)
		for i := range s.NICs {
			c := &s.NICs[i]
			c.MAC, c.Label, c.VLAN = d.str(), d.str(), int(d.int())
			c.IP, c.Netmask, c.Gateway = d.str(), d.str(), d.str()
			c.DeviceID, c.Model, c.Default = int(d.int()), d.str(), d.bool()
		}
	}
	if n := d.count(); n > 0 {
		s.BootOrder = make([]hypervisor.BootDevice, n)
		for i := range s.BootOrder {
			s.BootOrder[i] = hypervisor.BootDevice(d.str())
		}
	}
	// Specs recorded before the CD-ROM became a Disk kept the ISO here.
	if iso := d.str(); iso != "" {
		s.Disks = append(s.Disks, hypervisor.Disk{CDROM: true, ReadOnly: true, Path: iso})
	}
	s.UserData, s.ConsolePassword = d.str(), d.str()
	if n := d.count(); n > 0 {
		s.Metadata = make(map[string]string, n)
		for range n {
			k := d.str()
			s.Metadata[k] = d.str()
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("simulator vm spec: trailing bytes")
	}
	return s, d.err
}

// VM states as one byte.
var stateCodes = []hypervisor.State{"", hypervisor.StateRunning, hypervisor.StateStopped, hypervisor.StatePaused, hypervisor.StateUnknown}

func stateCode(s hypervisor.State) uint8 {
	if i := slices.Index(stateCodes, s); i > 0 {
		return uint8(i)
	}
	return 0
}

func stateOf(c uint8) hypervisor.State {
	if int(c) < len(stateCodes) {
		return stateCodes[c]
	}
	return hypervisor.StateUnknown
}

// Journal records: idempotent facts, replayed in order (see simkit).
const (
	recHost    byte = 1 // host connected: Host, URL, Scope
	recHostDel byte = 2 // host forgotten: Host
	recVM      byte = 3 // VM defined or changed: Host, State, Spec
	recVMDel   byte = 4 // VM undefined: Host, UUID
	recState   byte = 5 // VM state: Host, UUID, State
	recMove    byte = 6 // VM moved from Host to To, now in State
)

type record struct {
	T     byte
	Host  string
	To    string
	URL   string
	Scope simkit.Scope
	UUID  string
	State uint8
	Spec  []byte // encoded spec (recVM)
}

func (r *record) appendTo(b []byte) []byte {
	e := encoder{b: b}
	e.byte(r.T)
	e.str(r.Host)
	switch r.T {
	case recHost:
		e.str(r.URL)
		e.str(r.Scope.Zone)
		e.str(r.Scope.Pod)
		e.str(r.Scope.Cluster)
	case recVM:
		e.byte(r.State)
		e.bytes(r.Spec)
	case recVMDel:
		e.str(r.UUID)
	case recState:
		e.str(r.UUID)
		e.byte(r.State)
	case recMove:
		e.str(r.To)
		e.str(r.UUID)
		e.byte(r.State)
	}
	return e.b
}

// parseRecord decodes a record; Spec aliases b.
func parseRecord(b []byte) (record, error) {
	d := decoder{b: b}
	r := record{T: d.byte(), Host: d.str()}
	switch r.T {
	case recHost:
		r.URL = d.str()
		r.Scope = simkit.Scope{Zone: d.str(), Pod: d.str(), Cluster: d.str(), Host: r.Host}
	case recHostDel:
	case recVM:
		r.State = d.byte()
		r.Spec = d.raw()
	case recVMDel:
		r.UUID = d.str()
	case recState:
		r.UUID = d.str()
		r.State = d.byte()
	case recMove:
		r.To, r.UUID, r.State = d.str(), d.str(), d.byte()
	default:
		if d.err == nil {
			d.err = errors.New("simulator record: unknown type")
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = errors.New("simulator record: trailing bytes")
	}
	return r, d.err
}
