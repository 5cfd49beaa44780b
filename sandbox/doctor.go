package sandbox

import (
	"context"
	"fmt"
	"slices"
)

// DoctorReport is what `enclave-mcp doctor` shows about an engine.
type DoctorReport struct {
	ServerVersion    string
	APIVersion       string
	ClientAPIVersion string
	OS               string
	CgroupVersion    string
	Runtimes         []string
	HasRunsc         bool
	AgentBinary      string
	// AgentTransport is how agents carry the protocol ("socket" or "attach"), and
	// AgentTransportWhy why not a socket.
	AgentTransport, AgentTransportWhy string
	Images                            []ImageStatus
}

// ImageStatus tells whether a default image is on the engine, and built from this release's
// spec.
type ImageStatus struct {
	Tag   string
	State ImageState
}

// Doctor inspects the engine: its version, runtimes and the default images.
func (e *Docker) Doctor(ctx context.Context) (DoctorReport, error) {
	v, err := e.cli.ServerVersion(ctx)
	if err != nil {
		return DoctorReport{}, fmt.Errorf("%w: reading engine version: %w", ErrEngine, err)
	}
	info, err := e.cli.Info(ctx)
	if err != nil {
		return DoctorReport{}, fmt.Errorf("%w: reading engine info: %w", ErrEngine, err)
	}
	r := DoctorReport{
		ServerVersion:    v.Version,
		APIVersion:       v.APIVersion,
		ClientAPIVersion: e.cli.ClientVersion(),
		OS:               info.OperatingSystem,
		CgroupVersion:    info.CgroupVersion,
		AgentBinary:      e.agent.path,
	}
	r.AgentTransport, r.AgentTransportWhy = e.AgentTransport()
	for name := range info.Runtimes {
		r.Runtimes = append(r.Runtimes, name)
	}
	slices.Sort(r.Runtimes)
	r.HasRunsc = slices.Contains(r.Runtimes, "runsc")
	for _, spec := range DefaultImageSpecs("") {
		state, err := e.ImageState(ctx, spec)
		if err != nil {
			return r, err
		}
		r.Images = append(r.Images, ImageStatus{Tag: spec.Tag, State: state})
	}
	return r, nil
}
