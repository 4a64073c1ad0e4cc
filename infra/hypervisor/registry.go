package hypervisor

import (
	"fmt"
	"slices"
	"strings"
	"sync"
)

// Hypervisor types as CloudStack spells them (models use the same strings).
// CloudStack has no API name for Xen Project hosts; Nimbus calls them
// "XenProject" (libvirt's xen:/// driver).
const (
	TypeKVM        = "KVM"
	TypeLXC        = "LXC"
	TypeXenProject = "XenProject"
	TypeVMware     = "VMware"
	TypeBareMetal  = "BareMetal"
	TypeHyperV     = "Hyperv"
	TypeXenServer  = "XenServer"
	TypeSimulator  = "Simulator"
)

var types = []string{TypeKVM, TypeLXC, TypeXenProject, TypeVMware, TypeBareMetal, TypeHyperV, TypeXenServer, TypeSimulator}

// aliases are other spellings users type, already normalized.
var aliases = map[string]string{
	"vsphere": TypeVMware,
	"esxi":    TypeVMware,
	"xcpng":   TypeXenServer,
}

// Types lists every hypervisor type Nimbus knows, with or without a driver.
func Types() []string { return slices.Clone(types) }

// normalize folds case and drops spaces, dashes and underscores, so
// "kvm", "Hyper-V" and "Xen Project" find their type.
func normalize(name string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '-', '_':
			return -1
		}
		return r
	}, strings.ToLower(strings.TrimSpace(name)))
}

// Canonical returns the canonical spelling of a hypervisor type, or an
// ErrInvalid error listing the known types.
func Canonical(name string) (string, error) {
	n := normalize(name)
	for _, t := range types {
		if normalize(t) == n {
			return t, nil
		}
	}
	if t, ok := aliases[n]; ok {
		return t, nil
	}
	return "", NewError(ErrInvalid, "unknown hypervisor type %q (known: %s)", name, strings.Join(types, ", "))
}

// Registry maps hypervisor types to driver factories.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns an empty registry; tests use their own, the program
// uses the package-level one drivers register into from init.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register installs the factory of a known hypervisor type. Registering an
// unknown type or a type twice is a programming error and panics.
func (r *Registry) Register(hypervisorType string, f Factory) {
	t, err := Canonical(hypervisorType)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.factories[t]; dup {
		panic(fmt.Sprintf("hypervisor: driver for %s registered twice", t))
	}
	r.factories[t] = f
}

// Get returns the factory of a hypervisor type (any case). A known type
// without a driver fails with ErrNotSupported ("hypervisor type Hyperv is
// not supported yet"); an unknown name with ErrInvalid and the known list.
func (r *Registry) Get(hypervisorType string) (Factory, error) {
	t, err := Canonical(hypervisorType)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	f, ok := r.factories[t]
	r.mu.RUnlock()
	if !ok {
		return nil, NewError(ErrNotSupported, "hypervisor type %s is not supported yet", t)
	}
	return f, nil
}

// Open builds the driver of a hypervisor type.
func (r *Registry) Open(hypervisorType string, cfg Config) (Driver, error) {
	f, err := r.Get(hypervisorType)
	if err != nil {
		return nil, err
	}
	return f(cfg)
}

// Supported lists the types that have a driver, in Types order.
func (r *Registry) Supported() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []string
	for _, t := range types {
		if _, ok := r.factories[t]; ok {
			out = append(out, t)
		}
	}
	return out
}

var defaultRegistry = NewRegistry()

// Register installs a driver factory in the process-wide registry (call it
// from the driver package's init).
func Register(hypervisorType string, f Factory) { defaultRegistry.Register(hypervisorType, f) }

// Get returns a factory from the process-wide registry; see Registry.Get.
func Get(hypervisorType string) (Factory, error) { return defaultRegistry.Get(hypervisorType) }

// Open builds a driver from the process-wide registry.
func Open(hypervisorType string, cfg Config) (Driver, error) {
	return defaultRegistry.Open(hypervisorType, cfg)
}

// Supported lists the types with a driver in the process-wide registry.
func Supported() []string { return defaultRegistry.Supported() }
