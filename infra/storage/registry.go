package storage

import (
	"fmt"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// Image store providers as CloudStack spells them.
const (
	ProviderNFS   = "NFS"
	ProviderS3    = "S3"
	ProviderSwift = "Swift"
	ProviderSMB   = "SMB"
)

var providers = []string{ProviderNFS, ProviderS3, ProviderSwift, ProviderSMB}

// Providers lists every image store provider Nimbus knows.
func Providers() []string { return slices.Clone(providers) }

// CanonicalProvider returns the canonical spelling of an image store
// provider (any case), or an ErrInvalid error listing the known ones.
func CanonicalProvider(name string) (string, error) {
	n := strings.TrimSpace(name)
	for _, p := range providers {
		if strings.EqualFold(p, n) {
			return p, nil
		}
	}
	return "", hypervisor.NewError(ErrInvalid, "unknown image store provider %q (known: %s)", name, strings.Join(providers, ", "))
}

// PoolFactory builds a primary storage driver.
type PoolFactory func(Config) (PoolDriver, error)

// ImageStoreFactory builds a secondary storage driver.
type ImageStoreFactory func(Config) (ImageStoreDriver, error)

// Registry maps hypervisor types to pool drivers and providers to image
// store drivers.
type Registry struct {
	mu     sync.RWMutex
	pools  map[string]PoolFactory
	stores map[string]ImageStoreFactory
}

// NewRegistry returns an empty registry (tests); drivers register into the
// process-wide one from init.
func NewRegistry() *Registry {
	return &Registry{pools: map[string]PoolFactory{}, stores: map[string]ImageStoreFactory{}}
}

// RegisterPool installs the primary storage driver of a hypervisor type;
// an unknown type or a second registration panics.
func (r *Registry) RegisterPool(hypervisorType string, f PoolFactory) {
	t, err := hypervisor.Canonical(hypervisorType)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.pools[t]; dup {
		panic(fmt.Sprintf("storage: pool driver for %s registered twice", t))
	}
	r.pools[t] = f
}

// GetPool returns the primary storage driver factory of a hypervisor type
// (any case); a known type without one fails with ErrNotSupported.
func (r *Registry) GetPool(hypervisorType string) (PoolFactory, error) {
	t, err := hypervisor.Canonical(hypervisorType)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	f, ok := r.pools[t]
	r.mu.RUnlock()
	if !ok {
		return nil, hypervisor.NewError(ErrNotSupported, "primary storage for hypervisor type %s is not supported yet", t)
	}
	return f, nil
}

// OpenPool builds the primary storage driver of a hypervisor type.
func (r *Registry) OpenPool(hypervisorType string, cfg Config) (PoolDriver, error) {
	f, err := r.GetPool(hypervisorType)
	if err != nil {
		return nil, err
	}
	return f(cfg)
}

// RegisterImageStore installs the driver of an image store provider; an
// unknown provider or a second registration panics.
func (r *Registry) RegisterImageStore(provider string, f ImageStoreFactory) {
	p, err := CanonicalProvider(provider)
	if err != nil {
		panic(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.stores[p]; dup {
		panic(fmt.Sprintf("storage: image store driver for %s registered twice", p))
	}
	r.stores[p] = f
}

// GetImageStore returns the driver factory of a provider (any case); a
// known provider without one fails with ErrNotSupported.
func (r *Registry) GetImageStore(provider string) (ImageStoreFactory, error) {
	p, err := CanonicalProvider(provider)
	if err != nil {
		return nil, err
	}
	r.mu.RLock()
	f, ok := r.stores[p]
	r.mu.RUnlock()
	if !ok {
		return nil, hypervisor.NewError(ErrNotSupported, "image store provider %s is not supported yet", p)
	}
	return f, nil
}

// OpenImageStore builds the driver of an image store provider.
func (r *Registry) OpenImageStore(provider string, cfg Config) (ImageStoreDriver, error) {
	f, err := r.GetImageStore(provider)
	if err != nil {
		return nil, err
	}
	return f(cfg)
}

var defaultRegistry = NewRegistry()

// RegisterPool installs a pool driver in the process-wide registry.
func RegisterPool(hypervisorType string, f PoolFactory) {
	defaultRegistry.RegisterPool(hypervisorType, f)
}

// GetPool returns a pool driver factory from the process-wide registry.
func GetPool(hypervisorType string) (PoolFactory, error) {
	return defaultRegistry.GetPool(hypervisorType)
}

// OpenPool builds a pool driver from the process-wide registry.
func OpenPool(hypervisorType string, cfg Config) (PoolDriver, error) {
	return defaultRegistry.OpenPool(hypervisorType, cfg)
}

// RegisterImageStore installs an image store driver in the process-wide
// registry.
func RegisterImageStore(provider string, f ImageStoreFactory) {
	defaultRegistry.RegisterImageStore(provider, f)
}

// GetImageStore returns an image store driver factory from the process-wide
// registry.
func GetImageStore(provider string) (ImageStoreFactory, error) {
	return defaultRegistry.GetImageStore(provider)
}

// OpenImageStore builds an image store driver from the process-wide registry.
func OpenImageStore(provider string, cfg Config) (ImageStoreDriver, error) {
	return defaultRegistry.OpenImageStore(provider, cfg)
}

// LocalDir resolves a store or pool URL to a directory of this machine:
// file:///dir (or a bare absolute path) is that directory; nfs://server/export
// is mountRoot/server/export, where the export must already be mounted
// (mounted reports that case, so callers do not create it on the local disk).
func LocalDir(rawURL, mountRoot string) (dir string, mounted bool, err error) {
	if strings.HasPrefix(rawURL, "/") {
		return filepath.Clean(rawURL), false, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: %v", rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: file URLs name a local path (file:///dir)", rawURL)
		}
		if !filepath.IsAbs(u.Path) {
			return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: not an absolute path", rawURL)
		}
		return filepath.Clean(u.Path), false, nil
	case "nfs":
		if mountRoot == "" {
			return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: nfs needs a mount root (option mountroot)", rawURL)
		}
		if u.Host == "" || u.Path == "" {
			return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: want nfs://server/export", rawURL)
		}
		return filepath.Join(mountRoot, u.Hostname(), filepath.Clean("/"+u.Path)), true, nil
	}
	return "", false, hypervisor.NewError(ErrInvalid, "storage url %q: want file:///dir or nfs://server/export", rawURL)
}
