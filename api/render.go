package api

import (
	"context"
	"fmt"
	"sync"
)

// Renderer loads one entity by UUID and returns it as its list command shows
// it. Job results use renderers so that jobresult has the list's fields.
type Renderer func(ctx context.Context, s *Server, uuid string) (any, error)

var (
	renderMu  sync.RWMutex
	renderers = map[string]Renderer{}
)

// RegisterRenderer names the renderer of an entity type ("Zone", "Host"...).
func RegisterRenderer(typ string, r Renderer) {
	renderMu.Lock()
	defer renderMu.Unlock()
	if _, dup := renderers[typ]; dup {
		panic("api: renderer registered twice: " + typ)
	}
	renderers[typ] = r
}

// Render renders an entity of a registered type.
func (s *Server) Render(ctx context.Context, typ, uuid string) (any, error) {
	renderMu.RLock()
	r := renderers[typ]
	renderMu.RUnlock()
	if r == nil {
		return nil, fmt.Errorf("no renderer for %s", typ)
	}
	return r(ctx, s, uuid)
}
