package tools

import (
	"bytes"
	"fmt"
	"image"
	"image/draw"
	_ "image/gif"  // decodes GIF displays for fitting
	_ "image/jpeg" // decodes JPEG displays for fitting
	"image/png"
	"math"

	"github.com/enclave-mcp/enclave-mcp/notebook"
)

// Images go to the model as MCP image content, base64 inside the JSON-RPC message: a large
// one costs a third more than its size, and clients cap messages (the TypeScript SDK at
// 10 MiB). An image over the limits is downscaled to fit, and refused with a reason when it
// cannot be. Models see at most ~1.5k pixels a side anyway.
const (
	// maxImageSide is the longest side an image keeps; a larger one is downscaled.
	maxImageSide = 2000
	// maxImageSize caps one image's encoded bytes.
	maxImageSize = 1 << 20
	// maxImagesSize caps all images of one result.
	maxImagesSize = 3 << 20
	// maxDecodePixels refuses images too large to decode safely: a PNG of a few KB may claim
	// any size (a decompression bomb), and a decoded pixel takes up to 8 bytes (16-bit
	// RGBA), so this bounds one decode at 64 MB. A 300-dpi 10x8-inch figure is 7.2 M.
	maxDecodePixels = 8_000_000
	// fitAttempts bounds the shrink-and-re-encode rounds for one image.
	fitAttempts = 5
)

// fitImages fits each image to the limits, in order, and says what it changed or left out.
func fitImages(in []notebook.Image) ([]Image, []string) {
	var out []Image
	var notes []string
	total := 0
	for i, img := range in {
		fitted, note, ok := fitImage(img)
		if note != "" {
			notes = append(notes, fmt.Sprintf("image %d: %s", i+1, note))
		}
		if !ok {
			continue
		}
		if total+fitted.Size > maxImagesSize {
			notes = append(notes, fmt.Sprintf("image %d and after: left out, the result already carries %d KiB of images (limit %d KiB); display fewer per cell", i+1, total>>10, maxImagesSize>>10))
			break
		}
		total += fitted.Size
		out = append(out, fitted)
	}
	return out, notes
}

// fitImage returns img within the limits: as it is when it fits, else downscaled to PNG.
func fitImage(img notebook.Image) (Image, string, bool) {
	asIs := Image{MIMEType: img.MIMEType, Data: img.Data, Size: len(img.Data)}
	cfg, _, err := image.DecodeConfig(bytes.NewReader(img.Data))
	if err != nil {
		// A format the standard library does not read (WebP): it can be sent, not resized.
		if len(img.Data) <= maxImageSize {
			return asIs, "", true
		}
		return Image{}, fmt.Sprintf("left out: %s of %d KiB is over the %d KiB limit and cannot be resized; save it as a smaller PNG", img.MIMEType, len(img.Data)>>10, maxImageSize>>10), false
	}
	asIs.Width, asIs.Height = cfg.Width, cfg.Height
	if len(img.Data) <= maxImageSize && max(cfg.Width, cfg.Height) <= maxImageSide {
		return asIs, "", true
	}
	if cfg.Width*cfg.Height > maxDecodePixels {
		return Image{}, fmt.Sprintf("left out: %dx%d pixels is too large to resize; plot it smaller (figsize or dpi)", cfg.Width, cfg.Height), false
	}
	src, _, err := image.Decode(bytes.NewReader(img.Data))
	if err != nil {
		return Image{}, fmt.Sprintf("left out: its %s data does not decode: %v", img.MIMEType, err), false
	}
	// Start from the size a PNG of the same content would roughly have at the limit: bytes
	// go with the pixel count.
	scale := min(1, float64(maxImageSide)/float64(max(cfg.Width, cfg.Height)))
	if len(img.Data) > maxImageSize {
		scale = min(scale, 0.95*math.Sqrt(float64(maxImageSize)/float64(len(img.Data))))
	}
	for range fitAttempts {
		small := downscale(src, scale)
		var buf bytes.Buffer
		if err := png.Encode(&buf, small); err != nil {
			return Image{}, fmt.Sprintf("left out: re-encoding it failed: %v", err), false
		}
		if buf.Len() <= maxImageSize {
			b := small.Bounds()
			return Image{MIMEType: "image/png", Data: buf.Bytes(), Size: buf.Len(), Width: b.Dx(), Height: b.Dy()},
				fmt.Sprintf("downscaled from %dx%d (%d KiB) to %dx%d (%d KiB) to fit the limits", cfg.Width, cfg.Height, len(img.Data)>>10, b.Dx(), b.Dy(), buf.Len()>>10), true
		}
		scale *= 0.7
	}
	return Image{}, fmt.Sprintf("left out: %dx%d does not fit in %d KiB even downscaled; save it to a file instead", cfg.Width, cfg.Height, maxImageSize>>10), false
}

// downscale shrinks src by scale (0 < scale <= 1) by averaging each target pixel's source
// area, which keeps thin plot lines visible where sampling would drop them.
func downscale(src image.Image, scale float64) *image.RGBA {
	sb := src.Bounds()
	rgba, ok := src.(*image.RGBA)
	if !ok || sb.Min != (image.Point{}) {
		rgba = image.NewRGBA(image.Rect(0, 0, sb.Dx(), sb.Dy()))
		draw.Draw(rgba, rgba.Bounds(), src, sb.Min, draw.Src)
	}
	sw, sh := sb.Dx(), sb.Dy()
	dw, dh := max(1, int(float64(sw)*scale)), max(1, int(float64(sh)*scale))
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	for y := range dh {
		y0, y1 := y*sh/dh, max((y+1)*sh/dh, y*sh/dh+1)
		for x := range dw {
			x0, x1 := x*sw/dw, max((x+1)*sw/dw, x*sw/dw+1)
			var r, g, b, a, n int
			for sy := y0; sy < y1; sy++ {
				row := rgba.Pix[sy*rgba.Stride:]
				for sx := x0; sx < x1; sx++ {
					p := row[sx*4 : sx*4+4]
					r, g, b, a, n = r+int(p[0]), g+int(p[1]), b+int(p[2]), a+int(p[3]), n+1
				}
			}
			o := dst.PixOffset(x, y)
			dst.Pix[o], dst.Pix[o+1], dst.Pix[o+2], dst.Pix[o+3] = uint8(r/n), uint8(g/n), uint8(b/n), uint8(a/n)
		}
	}
	return dst
}
