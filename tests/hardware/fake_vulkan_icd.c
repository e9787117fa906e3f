/*
 * A fake Vulkan driver (ICD) for llamaship's tests: the system's real Vulkan loader loads it
 * through a manifest named by VK_DRIVER_FILES / VK_ICD_FILENAMES, negotiates the loader-driver
 * interface with it and calls it like a GPU driver. It implements what the loader and
 * llamaship.detect.vulkan_query call, with Vulkan's signatures, and no headers (CI has none).
 *
 * Driven by environment variables, read at vkCreateInstance:
 *   FAKE_VK_DEVICES  "name|vendor_id|device_id|type|api|driver|heap_mb|free_mb;..."
 *                    type: VkPhysicalDeviceType (1 integrated, 2 discrete, 3 virtual, 4 cpu);
 *                    api: "1.3.260"; driver: the encoded driverVersion; free_mb: -1 for a
 *                    device without VK_EXT_memory_budget. Unset or empty: no device.
 *   FAKE_VK_MODE     normal (default) | hang | crash: what vkEnumeratePhysicalDevices does
 *   FAKE_VK_PIDFILE  (hang) where "pid child_pid" of the hung process and its child go
 *   FAKE_VK_LOG      a file each call appends its function name to
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int32_t VkResult;
typedef void (*PFN_vkVoidFunction)(void);

#define VK_SUCCESS 0
#define VK_INCOMPLETE 5
#define VK_ERROR_OUT_OF_HOST_MEMORY (-1)
#define VK_ERROR_INITIALIZATION_FAILED (-3)
#define VK_ERROR_LAYER_NOT_PRESENT (-6)
#define VK_ERROR_FORMAT_NOT_SUPPORTED (-11)
#define ICD_LOADER_MAGIC 0x01CDC0DE
#define MAX_DEVICES 8
#define MAX_NAME 256
#define BUDGET_EXTENSION "VK_EXT_memory_budget"
#define STRUCTURE_MEMORY_BUDGET 1000237000

/* Dispatchable objects start with a pointer-sized slot the loader fills in. */
typedef struct {
    uintptr_t loader_data;
} fake_instance;

typedef struct {
    uintptr_t loader_data;
    char name[MAX_NAME];
    uint32_t vendor_id;
    uint32_t device_id;
    int32_t type;
    uint32_t api;
    uint32_t driver;
    uint64_t heap_mb;
    int64_t free_mb;
} fake_device;

/* The leading fields of VkPhysicalDeviceProperties; the caller's struct is larger. */
typedef struct {
    uint32_t apiVersion;
    uint32_t driverVersion;
    uint32_t vendorID;
    uint32_t deviceID;
    int32_t deviceType;
    char deviceName[MAX_NAME];
    uint8_t pipelineCacheUUID[16];
} properties_head;

typedef struct {
    int32_t sType;
    void *pNext;
    properties_head properties;
} properties_2;

typedef struct {
    uint32_t propertyFlags;
    uint32_t heapIndex;
} memory_type;

typedef struct {
    uint64_t size;
    uint32_t flags;
} memory_heap;

typedef struct {
    uint32_t memoryTypeCount;
    memory_type memoryTypes[32];
    uint32_t memoryHeapCount;
    memory_heap memoryHeaps[16];
} memory_properties;

typedef struct {
    int32_t sType;
    void *pNext;
    memory_properties memoryProperties;
} memory_properties_2;

typedef struct {
    int32_t sType;
    void *pNext;
    uint64_t heapBudget[16];
    uint64_t heapUsage[16];
} memory_budget;

typedef struct {
    int32_t sType;
    void *pNext;
} base_out;

typedef struct {
    char extensionName[MAX_NAME];
    uint32_t specVersion;
} extension_properties;

static fake_instance the_instance;
static fake_device devices[MAX_DEVICES];
static uint32_t device_count;

static void log_call(const char *function) {
    const char *path = getenv("FAKE_VK_LOG");
    if (path != NULL && *path != '\0') {
        FILE *file = fopen(path, "a");
        if (file != NULL) {
            fprintf(file, "%s\n", function);
            fclose(file);
        }
    }
}

static uint32_t make_version(const char *text) {
    unsigned major = 0, minor = 0, patch = 0;
    if (sscanf(text, "%u.%u.%u", &major, &minor, &patch) < 2) {
        return 0;
    }
    return (major << 22) | (minor << 12) | patch;
}

/* Parse one "name|vendor_id|device_id|type|api|driver|heap_mb|free_mb" entry; 0 on success. */
static int parse_device(char *entry, fake_device *device) {
    char *fields[8];
    char *rest = entry;
    for (int i = 0; i < 8; i++) {
        fields[i] = strsep(&rest, "|");
        if (fields[i] == NULL) {
            return -1;
        }
    }
    if (rest != NULL || strlen(fields[0]) >= MAX_NAME) {
        return -1;
    }
    memset(device, 0, sizeof(*device));
    device->loader_data = ICD_LOADER_MAGIC;
    strcpy(device->name, fields[0]);
    device->vendor_id = (uint32_t)strtoul(fields[1], NULL, 0);
    device->device_id = (uint32_t)strtoul(fields[2], NULL, 0);
    device->type = (int32_t)strtol(fields[3], NULL, 0);
    device->api = make_version(fields[4]);
    device->driver = (uint32_t)strtoul(fields[5], NULL, 0);
    device->heap_mb = strtoull(fields[6], NULL, 0);
    device->free_mb = strtoll(fields[7], NULL, 0);
    return 0;
}

static int parse_devices(void) {
    const char *spec = getenv("FAKE_VK_DEVICES");
    device_count = 0;
    if (spec == NULL || *spec == '\0') {
        return 0;
    }
    char *copy = strdup(spec);
    char *rest = copy;
    char *entry;
    int status = 0;
    while (status == 0 && (entry = strsep(&rest, ";")) != NULL) {
        if (*entry == '\0') {
            continue;
        }
        if (device_count == MAX_DEVICES || parse_device(entry, &devices[device_count]) != 0) {
            status = -1;
        } else {
            device_count++;
        }
    }
    free(copy);
    return status;
}

static void hang(void) {
    pid_t child = fork();
    if (child == 0) {
        sleep(3600); /* a descendant in the same process group, as a hung driver call leaves */
        _exit(0);
    }
    const char *path = getenv("FAKE_VK_PIDFILE");
    if (path != NULL) {
        FILE *file = fopen(path, "w");
        if (file != NULL) {
            fprintf(file, "%d %d", (int)getpid(), (int)child);
            fclose(file);
        }
    }
    sleep(3600);
}

static VkResult fake_vkCreateInstance(const void *info, const void *allocator, void **instance) {
    (void)info;
    (void)allocator;
    log_call("vkCreateInstance");
    if (parse_devices() != 0) {
        return VK_ERROR_INITIALIZATION_FAILED;
    }
    the_instance.loader_data = ICD_LOADER_MAGIC;
    *instance = &the_instance;
    return VK_SUCCESS;
}

static void fake_vkDestroyInstance(void *instance, const void *allocator) {
    (void)instance;
    (void)allocator;
    log_call("vkDestroyInstance");
}

static VkResult fake_vkEnumerateInstanceExtensionProperties(
    const char *layer, uint32_t *count, extension_properties *properties) {
    (void)properties;
    if (layer != NULL) {
        return VK_ERROR_LAYER_NOT_PRESENT;
    }
    *count = 0;
    return VK_SUCCESS;
}

static VkResult fake_vkEnumeratePhysicalDevices(void *instance, uint32_t *count, void **out) {
    (void)instance;
    log_call("vkEnumeratePhysicalDevices");
    const char *mode = getenv("FAKE_VK_MODE");
    if (mode != NULL && strcmp(mode, "hang") == 0) {
        hang();
    }
    if (mode != NULL && strcmp(mode, "crash") == 0) {
        raise(SIGSEGV);
    }
    if (out == NULL) {
        *count = device_count;
        return VK_SUCCESS;
    }
    uint32_t written = *count < device_count ? *count : device_count;
    for (uint32_t i = 0; i < written; i++) {
        out[i] = &devices[i];
    }
    *count = written;
    return written < device_count ? VK_INCOMPLETE : VK_SUCCESS;
}

static void fill_properties(const fake_device *device, properties_head *properties) {
    memset(properties, 0, sizeof(*properties));
    properties->apiVersion = device->api;
    properties->driverVersion = device->driver;
    properties->vendorID = device->vendor_id;
    properties->deviceID = device->device_id;
    properties->deviceType = device->type;
    strcpy(properties->deviceName, device->name);
}

static void fake_vkGetPhysicalDeviceProperties(void *device, properties_head *properties) {
    log_call("vkGetPhysicalDeviceProperties");
    fill_properties(device, properties);
}

static void fake_vkGetPhysicalDeviceProperties2(void *device, properties_2 *properties) {
    log_call("vkGetPhysicalDeviceProperties2");
    fill_properties(device, &properties->properties);
}

static void fill_memory(const fake_device *device, memory_properties *memory) {
    memset(memory, 0, sizeof(*memory));
    memory->memoryTypeCount = 2;
    memory->memoryTypes[0].propertyFlags = 0x1; /* DEVICE_LOCAL */
    memory->memoryTypes[0].heapIndex = 0;
    memory->memoryTypes[1].propertyFlags = 0x6; /* HOST_VISIBLE | HOST_COHERENT */
    memory->memoryTypes[1].heapIndex = 1;
    memory->memoryHeapCount = 2;
    memory->memoryHeaps[0].size = device->heap_mb * 1024ULL * 1024ULL;
    memory->memoryHeaps[0].flags = 0x1; /* DEVICE_LOCAL */
    memory->memoryHeaps[1].size = 4096ULL * 1024ULL * 1024ULL; /* system memory */
}

static void fake_vkGetPhysicalDeviceMemoryProperties(void *device, memory_properties *memory) {
    log_call("vkGetPhysicalDeviceMemoryProperties");
    fill_memory(device, memory);
}

static void fake_vkGetPhysicalDeviceMemoryProperties2(void *handle, memory_properties_2 *memory) {
    const fake_device *device = handle;
    log_call("vkGetPhysicalDeviceMemoryProperties2");
    fill_memory(device, &memory->memoryProperties);
    for (base_out *next = memory->pNext; next != NULL; next = next->pNext) {
        if (next->sType == STRUCTURE_MEMORY_BUDGET && device->free_mb >= 0) {
            memory_budget *budget = (memory_budget *)next;
            memset(budget->heapBudget, 0, sizeof(budget->heapBudget));
            memset(budget->heapUsage, 0, sizeof(budget->heapUsage));
            budget->heapBudget[0] = device->heap_mb * 1024ULL * 1024ULL;
            budget->heapUsage[0] = (device->heap_mb - (uint64_t)device->free_mb) * 1024ULL * 1024ULL;
        }
    }
}

static VkResult fake_vkEnumerateDeviceExtensionProperties(
    void *handle, const char *layer, uint32_t *count, extension_properties *properties) {
    const fake_device *device = handle;
    uint32_t available = device->free_mb >= 0 ? 1 : 0;
    if (layer != NULL) {
        return VK_ERROR_LAYER_NOT_PRESENT;
    }
    if (properties == NULL) {
        *count = available;
        return VK_SUCCESS;
    }
    uint32_t written = *count < available ? *count : available;
    if (written == 1) {
        memset(&properties[0], 0, sizeof(properties[0]));
        strcpy(properties[0].extensionName, BUDGET_EXTENSION);
        properties[0].specVersion = 1;
    }
    *count = written;
    return written < available ? VK_INCOMPLETE : VK_SUCCESS;
}

static void fake_vkGetPhysicalDeviceQueueFamilyProperties(void *device, uint32_t *count, void *out) {
    (void)device;
    (void)out;
    *count = 0;
}

/* Entry points the loader requires of every driver; this one has no device to create. */
static void fake_vkGetPhysicalDeviceFeatures(void *device, void *features) {
    (void)device;
    (void)features;
}

static void fake_vkGetPhysicalDeviceFormatProperties(void *device, int32_t format, void *out) {
    (void)device;
    (void)format;
    (void)out;
}

static VkResult fake_vkGetPhysicalDeviceImageFormatProperties(
    void *device, int32_t format, int32_t type, int32_t tiling, uint32_t usage, uint32_t flags,
    void *out) {
    (void)device, (void)format, (void)type, (void)tiling, (void)usage, (void)flags, (void)out;
    return VK_ERROR_FORMAT_NOT_SUPPORTED;
}

static void fake_vkGetPhysicalDeviceSparseImageFormatProperties(
    void *device, int32_t format, int32_t type, int32_t samples, uint32_t usage, int32_t tiling,
    uint32_t *count, void *out) {
    (void)device, (void)format, (void)type, (void)samples, (void)usage, (void)tiling, (void)out;
    *count = 0;
}

static VkResult fake_vkCreateDevice(void *device, const void *info, const void *allocator,
                                    void **out) {
    (void)device, (void)info, (void)allocator, (void)out;
    return VK_ERROR_INITIALIZATION_FAILED;
}

static PFN_vkVoidFunction fake_vkGetDeviceProcAddr(void *device, const char *name) {
    (void)device, (void)name;
    return NULL;
}

typedef struct {
    const char *name;
    PFN_vkVoidFunction function;
} entry_point;

#define ENTRY(name, function) {name, (PFN_vkVoidFunction)function}

static const entry_point entry_points[] = {
    ENTRY("vkCreateInstance", fake_vkCreateInstance),
    ENTRY("vkDestroyInstance", fake_vkDestroyInstance),
    ENTRY("vkEnumerateInstanceExtensionProperties", fake_vkEnumerateInstanceExtensionProperties),
    ENTRY("vkEnumeratePhysicalDevices", fake_vkEnumeratePhysicalDevices),
    ENTRY("vkGetPhysicalDeviceProperties", fake_vkGetPhysicalDeviceProperties),
    ENTRY("vkGetPhysicalDeviceProperties2", fake_vkGetPhysicalDeviceProperties2),
    ENTRY("vkGetPhysicalDeviceProperties2KHR", fake_vkGetPhysicalDeviceProperties2),
    ENTRY("vkGetPhysicalDeviceMemoryProperties", fake_vkGetPhysicalDeviceMemoryProperties),
    ENTRY("vkGetPhysicalDeviceMemoryProperties2", fake_vkGetPhysicalDeviceMemoryProperties2),
    ENTRY("vkGetPhysicalDeviceMemoryProperties2KHR", fake_vkGetPhysicalDeviceMemoryProperties2),
    ENTRY("vkEnumerateDeviceExtensionProperties", fake_vkEnumerateDeviceExtensionProperties),
    ENTRY("vkGetPhysicalDeviceQueueFamilyProperties", fake_vkGetPhysicalDeviceQueueFamilyProperties),
    ENTRY("vkGetPhysicalDeviceFeatures", fake_vkGetPhysicalDeviceFeatures),
    ENTRY("vkGetPhysicalDeviceFormatProperties", fake_vkGetPhysicalDeviceFormatProperties),
    ENTRY("vkGetPhysicalDeviceImageFormatProperties", fake_vkGetPhysicalDeviceImageFormatProperties),
    ENTRY("vkGetPhysicalDeviceSparseImageFormatProperties",
          fake_vkGetPhysicalDeviceSparseImageFormatProperties),
    ENTRY("vkCreateDevice", fake_vkCreateDevice),
    ENTRY("vkGetDeviceProcAddr", fake_vkGetDeviceProcAddr),
};

__attribute__((visibility("default"))) VkResult vk_icdNegotiateLoaderICDInterfaceVersion(
    uint32_t *version) {
    if (*version > 5) {
        *version = 5;
    }
    return VK_SUCCESS;
}

__attribute__((visibility("default"))) PFN_vkVoidFunction vk_icdGetInstanceProcAddr(
    void *instance, const char *name) {
    (void)instance;
    for (size_t i = 0; i < sizeof(entry_points) / sizeof(entry_points[0]); i++) {
        if (strcmp(entry_points[i].name, name) == 0) {
            return entry_points[i].function;
        }
    }
    return NULL;
}
