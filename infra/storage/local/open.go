package local

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
	"github.com/nimbus-cloud/nimbus/infra/storage"
)

// Open opens a stored image for reading: the provisioning server streams
// BareMetal kernels and initrds out of templates with it.
func (d *Driver) Open(ctx context.Context, s storage.ImageStore, rel string) (io.ReadCloser, storage.Image, error) {
	p, err := d.path("Open", s, rel)
	if err != nil {
		return nil, storage.Image{}, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, storage.Image{}, hypervisor.Errorf(driverName, "Open", rel, storage.ErrNotFound, "")
	}
	if err != nil {
		return nil, storage.Image{}, hypervisor.Errorf(driverName, "Open", rel, nil, "%w", err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, storage.Image{}, hypervisor.Errorf(driverName, "Open", rel, storage.ErrInvalid, "not a regular file")
	}
	return f, storage.Image{Path: rel, SizeBytes: fi.Size()}, nil
}
