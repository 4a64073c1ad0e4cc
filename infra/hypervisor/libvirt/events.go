package libvirt

import (
	"context"
	"time"

	golibvirt "github.com/digitalocean/go-libvirt"

	"github.com/nimbus-cloud/nimbus/infra/hypervisor"
)

// WatchVMs streams the host's domain lifecycle events (libvirt's event
// stream on the pooled connection) until ctx ends or the connection drops;
// then the channel closes and the consumer reconciles with ListVMs.
func (d *Driver) WatchVMs(ctx context.Context, h hypervisor.Host) (<-chan hypervisor.VMEvent, error) {
	var events <-chan golibvirt.DomainEventLifecycleMsg
	var l *golibvirt.Libvirt
	err := d.run(ctx, h, "WatchVMs", h.String(), func(_ context.Context, c *golibvirt.Libvirt) error {
		var err error
		l = c
		// The subscription lives as long as the caller's ctx, not this call.
		events, err = c.LifecycleEvents(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make(chan hypervisor.VMEvent, 64)
	go func() {
		defer close(out)
		guestShutdown := map[golibvirt.UUID]bool{}
		for {
			var ev golibvirt.DomainEventLifecycleMsg
			var ok bool
			select {
			case ev, ok = <-events:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
			e, send := translateEvent(l, h, ev, guestShutdown)
			if !send {
				continue
			}
			select {
			case out <- e:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// translateEvent maps a libvirt lifecycle event to a VMEvent. A guest's
// own power-off shows as a Shutdown(guest) event followed by
// Stopped(shutdown): the second is reported as "guest-shutdown".
func translateEvent(l *golibvirt.Libvirt, h hypervisor.Host, ev golibvirt.DomainEventLifecycleMsg, guestShutdown map[golibvirt.UUID]bool) (hypervisor.VMEvent, bool) {
	e := hypervisor.VMEvent{HostID: h.ID, Name: ev.Dom.Name, UUID: uuidString(ev.Dom.UUID), Time: time.Now()}
	switch golibvirt.DomainEventType(ev.Event) {
	case golibvirt.DomainEventDefined:
		e.Reason = "defined"
		e.State = hypervisor.StateStopped
		if s, err := domState(l, ev.Dom); err == nil {
			e.State = stateOf(s)
		}
	case golibvirt.DomainEventUndefined:
		e.Reason = "undefined"
	case golibvirt.DomainEventStarted:
		e.State, e.Reason = hypervisor.StateRunning, "started"
		switch golibvirt.DomainEventStartedDetailType(ev.Detail) {
		case golibvirt.DomainEventStartedMigrated:
			e.Reason = "migrated"
		case golibvirt.DomainEventStartedRestored:
			e.Reason = "restored"
		}
		delete(guestShutdown, ev.Dom.UUID)
	case golibvirt.DomainEventSuspended:
		e.State, e.Reason = hypervisor.StatePaused, "paused"
	case golibvirt.DomainEventPmsuspended:
		e.State, e.Reason = hypervisor.StatePaused, "pm-suspended"
	case golibvirt.DomainEventResumed:
		e.State, e.Reason = hypervisor.StateRunning, "resumed"
	case golibvirt.DomainEventShutdown:
		// The guest (or host) is shutting down; Stopped follows.
		if golibvirt.DomainEventShutdownDetailType(ev.Detail) == golibvirt.DomainEventShutdownGuest {
			guestShutdown[ev.Dom.UUID] = true
		}
		return e, false
	case golibvirt.DomainEventStopped:
		e.State = hypervisor.StateStopped
		switch golibvirt.DomainEventStoppedDetailType(ev.Detail) {
		case golibvirt.DomainEventStoppedShutdown:
			e.Reason = "stopped"
			if guestShutdown[ev.Dom.UUID] {
				e.Reason = "guest-shutdown"
			}
		case golibvirt.DomainEventStoppedDestroyed:
			e.Reason = "destroyed"
		case golibvirt.DomainEventStoppedCrashed:
			e.Reason = "crashed"
		case golibvirt.DomainEventStoppedMigrated:
			e.Reason = "migrated"
		case golibvirt.DomainEventStoppedSaved:
			e.Reason = "saved"
		case golibvirt.DomainEventStoppedFailed:
			e.Reason = "failed"
		default:
			e.Reason = "stopped"
		}
		delete(guestShutdown, ev.Dom.UUID)
	case golibvirt.DomainEventCrashed:
		e.State, e.Reason = hypervisor.StateStopped, "crashed"
	default:
		return e, false
	}
	return e, true
}
