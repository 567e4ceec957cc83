/*
 * iweblens.inference._letterbox: darknet's letterbox in one pass over the pixels it reads, bit-identical
 * to the NumPy code in letterbox.py (the reference and the fallback).
 *
 * Exactness rests on doing the same IEEE float32 operations in the same order as NumPy does:
 * every product and sum is rounded to float32 on its own. The build passes -ffp-contract=off so
 * that no compiler fuses a*b + c*d into a fused multiply-add (one rounding instead of two), and
 * nothing here may be built with -ffast-math. The tests compare both paths on real photographs.
 *
 * Plain C against the buffer protocol: no NumPy headers are needed to build it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define GREY 0.5f

/* darknet's corner-aligned linear resize along one axis, as letterbox._axis_weights computes it:
 * coordinate i * ((source - 1) / (target - 1)) in float32, truncated to the low index; the high
 * index is clamped to the last source pixel. Writes low, high, frac for i in [0, target). */
static void axis_weights(Py_ssize_t source, Py_ssize_t target, Py_ssize_t *low, Py_ssize_t *high,
                         float *frac) {
    const float scale = target > 1 ? (float)(source - 1) / (float)(target - 1) : 0.0f;
    for (Py_ssize_t i = 0; i < target; i++) {
        const float coord = (float)i * scale;
        const Py_ssize_t index = (Py_ssize_t)coord;
        low[i] = index;
        high[i] = index + 1 < source - 1 ? index + 1 : source - 1;
        frac[i] = coord - (float)index;
    }
}

/* Whether every index is a pixel of the source: float32 rounding can put a low index past the
 * edge of a side longer than 2**24 pixels, where NumPy's indexing raises IndexError. */
static int inside(const Py_ssize_t *index, Py_ssize_t count, Py_ssize_t source) {
    for (Py_ssize_t i = 0; i < count; i++) {
        if (index[i] > source - 1) {
            return 0;
        }
    }
    return 1;
}

/* Everything one call needs besides the pixels, allocated in one block before the GIL is let go. */
typedef struct {
    Py_ssize_t *x_low, *x_high; /* byte offsets of the left and right source pixels in a row */
    float *x_keep, *x_take;     /* their weights: 1 - frac and frac */
    Py_ssize_t *y_low, *y_high; /* source rows */
    float *y_keep, *y_below;    /* 1 - frac and frac, the last row's share of the row below 0 */
    float *rows[2];             /* two horizontally resized source rows, planar RGB */
    Py_ssize_t row_of[2];       /* which source row each holds, -1 for none */
    void *block;
} Plan;

static int plan_alloc(Plan *plan, Py_ssize_t width, Py_ssize_t height) {
    /* Per output column: two offsets, two weights, three floats in each of the two rows; per
     * output row: two indices, two weights. The sum is checked before it is computed. */
    const size_t per_column = 2 * sizeof(Py_ssize_t) + 2 * sizeof(float) + 2 * 3 * sizeof(float);
    const size_t per_row = 2 * sizeof(Py_ssize_t) + 2 * sizeof(float);
    const size_t w = (size_t)width, h = (size_t)height;
    if (w > SIZE_MAX / per_column || h > (SIZE_MAX - w * per_column) / per_row) {
        return -1;
    }
    const size_t bytes = w * per_column + h * per_row;
    char *p = malloc(bytes);
    if (p == NULL) {
        return -1;
    }
    plan->block = p;
    plan->x_low = (Py_ssize_t *)p, p += w * sizeof(Py_ssize_t);
    plan->x_high = (Py_ssize_t *)p, p += w * sizeof(Py_ssize_t);
    plan->y_low = (Py_ssize_t *)p, p += h * sizeof(Py_ssize_t);
    plan->y_high = (Py_ssize_t *)p, p += h * sizeof(Py_ssize_t);
    plan->x_keep = (float *)p, p += w * sizeof(float);
    plan->x_take = (float *)p, p += w * sizeof(float);
    plan->y_keep = (float *)p, p += h * sizeof(float);
    plan->y_below = (float *)p, p += h * sizeof(float);
    plan->rows[0] = (float *)p, p += 3 * w * sizeof(float);
    plan->rows[1] = (float *)p;
    plan->row_of[0] = plan->row_of[1] = -1;
    return 0;
}

/* Both axes' indices and weights; -1, before any pixel is read, if one falls outside the image. */
static int plan_weights(Plan *plan, const Py_buffer *image, Py_ssize_t width, Py_ssize_t height) {
    const Py_ssize_t src_h = image->shape[0], src_w = image->shape[1];
    float *frac = plan->x_take;
    axis_weights(src_w, width, plan->x_low, plan->x_high, frac);
    axis_weights(src_h, height, plan->y_low, plan->y_high, plan->y_below);
    /* darknet takes the last column straight from the source's last column. */
    plan->x_low[width - 1] = src_w - 1;
    frac[width - 1] = 0.0f;
    if (!inside(plan->x_low, width, src_w) || !inside(plan->y_low, height, src_h)) {
        return -1;
    }
    for (Py_ssize_t x = 0; x < width; x++) {
        plan->x_keep[x] = 1.0f - frac[x];
        plan->x_low[x] *= image->strides[1];
        plan->x_high[x] *= image->strides[1];
    }
    for (Py_ssize_t y = 0; y < height; y++) {
        plan->y_keep[y] = 1.0f - plan->y_below[y];
    }
    /* ...and gives the last row no share of the row below it (its 1 - frac stays as computed). */
    plan->y_below[height - 1] = 0.0f;
    return 0;
}

/* Source row `row` resized horizontally, planar RGB (3 x width), in a slot other than `keep`. */
static const float *resized_row(Plan *plan, const Py_buffer *image, const float *lut,
                                Py_ssize_t width, Py_ssize_t row, const float *keep) {
    for (int slot = 0; slot < 2; slot++) {
        if (plan->row_of[slot] == row) {
            return plan->rows[slot];
        }
    }
    const int slot = plan->rows[0] == keep ? 1 : 0;
    float *out = plan->rows[slot];
    plan->row_of[slot] = row;
    const unsigned char *pixels = (const unsigned char *)image->buf + row * image->strides[0];
    const Py_ssize_t channel = image->strides[2];
    /* Output plane c is RGB, so it reads BGR channel 2 - c. */
    for (int c = 0; c < 3; c++) {
        const unsigned char *src = pixels + (2 - c) * channel;
        float *dst = out + c * width;
        for (Py_ssize_t x = 0; x < width; x++) {
            const float left = lut[src[plan->x_low[x]]];
            const float right = lut[src[plan->x_high[x]]];
            dst[x] = left * plan->x_keep[x] + right * plan->x_take[x];
        }
    }
    return out;
}

static void fill(float *dst, Py_ssize_t count) {
    for (Py_ssize_t i = 0; i < count; i++) {
        dst[i] = GREY;
    }
}

static void letterbox(Plan *plan, const Py_buffer *image, float *blob, Py_ssize_t size,
                      Py_ssize_t left, Py_ssize_t top, Py_ssize_t width, Py_ssize_t height,
                      float scale) {
    float lut[256];
    for (int v = 0; v < 256; v++) {
        lut[v] = (float)v * scale;
    }
    for (int c = 0; c < 3; c++) {
        float *plane = blob + c * size * size;
        fill(plane, top * size);
        fill(plane + (top + height) * size, (size - top - height) * size);
        for (Py_ssize_t y = top; y < top + height; y++) {
            fill(plane + y * size, left);
            fill(plane + y * size + left + width, size - left - width);
        }
    }
    for (Py_ssize_t y = 0; y < height; y++) {
        const float *upper = resized_row(plan, image, lut, width, plan->y_low[y], NULL);
        const float *lower = resized_row(plan, image, lut, width, plan->y_high[y], upper);
        const float keep = plan->y_keep[y], below = plan->y_below[y];
        for (int c = 0; c < 3; c++) {
            const float *a = upper + c * width, *b = lower + c * width;
            float *dst = blob + c * size * size + (top + y) * size + left;
            for (Py_ssize_t x = 0; x < width; x++) {
                dst[x] = a[x] * keep + b[x] * below;
            }
        }
    }
}

/* Whether a box of width x height at (left, top) fits a size x size square, without a sum that
 * can overflow: every operand is checked positive first, so size - width cannot wrap. */
static int box_fits(Py_ssize_t size, Py_ssize_t left, Py_ssize_t top, Py_ssize_t width,
                    Py_ssize_t height) {
    return size >= 1 && width >= 1 && height >= 1 && left >= 0 && top >= 0 &&
           width <= size && height <= size && left <= size - width && top <= size - height;
}

/* Whether `bytes` are exactly 3 * size * size float32 items (size >= 1), without forming the
 * product before it is known to fit. */
static int blob_holds(Py_ssize_t bytes, Py_ssize_t size) {
    if (bytes < 0 || bytes % (Py_ssize_t)(3 * sizeof(float)) != 0) {
        return 0;
    }
    const Py_ssize_t per_plane = bytes / (Py_ssize_t)(3 * sizeof(float));
    return size <= per_plane / size && size * size == per_plane;
}

PyDoc_STRVAR(letterbox_into_doc,
             "letterbox_into(image, blob, size, left, top, width, height, scale)\n--\n\n"
             "Write darknet's letterbox of `image` into `blob`.\n\n"
             "image: an (H, W, 3) uint8 BGR buffer, any strides. blob: a writable C-contiguous\n"
             "float32 buffer of 3 * size * size items (NCHW, RGB), overwritten entirely: the\n"
             "image resized to width x height at (left, top), pixels times float32(scale),\n"
             "0.5 elsewhere. Raises TypeError or ValueError for other buffers or a box that\n"
             "does not fit, IndexError where float32 rounding would read past the image\n"
             "(as NumPy's indexing does), MemoryError if the working buffers cannot be had.");

static PyObject *letterbox_into(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    (void)module;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "letterbox_into() takes exactly 8 arguments");
        return NULL;
    }
    Py_ssize_t numbers[5];
    for (int i = 0; i < 5; i++) {
        numbers[i] = PyLong_AsSsize_t(args[2 + i]);
        if (numbers[i] == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    const Py_ssize_t size = numbers[0], left = numbers[1], top = numbers[2];
    const Py_ssize_t width = numbers[3], height = numbers[4];
    const double scale = PyFloat_AsDouble(args[7]);
    if (scale == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    if (!box_fits(size, left, top, width, height)) {
        PyErr_SetString(PyExc_ValueError, "the resized image does not fit in the blob");
        return NULL;
    }
    Py_buffer image, blob;
    if (PyObject_GetBuffer(args[0], &image, PyBUF_RECORDS_RO) < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(args[1], &blob, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | PyBUF_WRITABLE) <
        0) {
        PyBuffer_Release(&image);
        return NULL;
    }
    PyObject *result = NULL;
    Plan plan;
    if (image.ndim != 3 || image.shape[2] != 3 || image.shape[0] < 1 || image.shape[1] < 1 ||
        strcmp(image.format, "B") != 0) {
        PyErr_SetString(PyExc_TypeError, "image must be an (H, W, 3) uint8 buffer");
    } else if (strcmp(blob.format, "f") != 0 || !blob_holds(blob.len, size)) {
        PyErr_SetString(PyExc_TypeError, "blob must be float32 with 3 * size * size items");
    } else if (plan_alloc(&plan, width, height) < 0) {
        PyErr_NoMemory();
    } else {
        if (plan_weights(&plan, &image, width, height) < 0) {
            PyErr_SetString(PyExc_IndexError, "float32 rounding indexes past the image's edge");
        } else {
            Py_BEGIN_ALLOW_THREADS
            letterbox(&plan, &image, (float *)blob.buf, size, left, top, width, height,
                      (float)scale);
            Py_END_ALLOW_THREADS
            result = Py_NewRef(Py_None);
        }
        free(plan.block);
    }
    PyBuffer_Release(&blob);
    PyBuffer_Release(&image);
    return result;
}

static PyMethodDef methods[] = {
    {"letterbox_into", (PyCFunction)(void (*)(void))letterbox_into, METH_FASTCALL,
     letterbox_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "iweblens.inference._letterbox",
    .m_doc = "darknet's letterbox, compiled; see iweblens.inference.letterbox.",
    .m_size = 0,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__letterbox(void) { return PyModuleDef_Init(&module); }
