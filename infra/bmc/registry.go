package bmc

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Providers as Nimbus names them.
const (
	ProviderIPMI      = "ipmi"
	ProviderRedfish   = "redfish"
	ProviderSimulator = "simulator"
)

var providers = []string{ProviderIPMI, ProviderRedfish, ProviderSimulator}

var aliases = map[string]string{"ipmitool": ProviderIPMI, "ipmi2": ProviderIPMI, "gofish": ProviderRedfish, "sim": ProviderSimulator}

// Providers lists every BMC provider Nimbus knows.
func Providers() []string { return slices.Clone(providers) }

// Canonical returns the canonical name of a provider (any case), or an
// ErrInvalid error listing the known ones.
func Canonical(name string) (string, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	if slices.Contains(providers, n) {
		return n, nil
	}
	if p, ok := aliases[n]; ok {
		return p, nil
	}
	return "", hypervisor.NewError(ErrInvalid, "unknown bmc provider %q (known: %s)", name, strings.Join(providers, ", "))
}

// Registry maps providers to driver factories.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns an empty registry (tests); drivers register into the
// process-wide one from init.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// Register installs a provider's factory; an unknown provider or a second
// registration panics.
func (r *Registry) Register(provider string, f Factory) {
	p, err := Canonical(provider)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.factories[p]; dup {
		panic(fmt.Sprintf("bmc: driver for %s registered twice", p))
	}
	r.factories[p] = f
}

// Get returns a provider's factory; a known provider without a driver
// fails with ErrNotSupported ("bmc provider ipmi is not supported yet").
func (r *Registry) Get(provider string) (Factory, error) {
	p, err := Canonical(provider)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	f, ok := r.factories[p]
	r.mu.RUnlock()
	if !ok {
		return nil, hypervisor.NewError(ErrNotSupported, "bmc provider %s is not supported yet", p)
	}
	return f, nil
}

// Open builds a provider's driver.
func (r *Registry) Open(provider string, cfg Config) (Driver, error) {
	f, err := r.Get(provider)
	if err != nil {
		return nil, err
	}
	return f(cfg)
}

var defaultRegistry = NewRegistry()

// Register installs a driver in the process-wide registry.
func Register(provider string, f Factory) { defaultRegistry.Register(provider, f) }

// Get returns a factory from the process-wide registry.
func Get(provider string) (Factory, error) { return defaultRegistry.Get(provider) }

// Open builds a driver from the process-wide registry.
func Open(provider string, cfg Config) (Driver, error) { return defaultRegistry.Open(provider, cfg) }
