"""List the Vulkan physical devices through the system's loader, with ctypes.

This runs only in the child process `llamaship vulkan-devices` (a driver may hang or crash
while it is asked): it imports nothing heavy and answers with plain JSON-compatible data.
"""

from __future__ import annotations

import ctypes
import sys
from typing import Any

from llamaship.detect.errors import NoDriver, SourceFailed, SourceMissing

LOADER_NAMES = {"win32": "vulkan-1.dll", "darwin": "libvulkan.1.dylib"}
LINUX_LOADER = "libvulkan.so.1"

VENDORS = {
    0x10DE: "NVIDIA",
    0x1002: "AMD",
    0x8086: "Intel",
    0x10005: "Mesa",
    0x13B5: "ARM",
    0x5143: "Qualcomm",
    0x106B: "Apple",
}
DEVICE_TYPES = ("other", "integrated", "discrete", "virtual", "cpu")  # VkPhysicalDeviceType

_VK_SUCCESS = 0
_VK_INCOMPLETE = 5
_VK_ERROR_INCOMPATIBLE_DRIVER = -9
_RESULTS = {
    -1: "VK_ERROR_OUT_OF_HOST_MEMORY",
    -2: "VK_ERROR_OUT_OF_DEVICE_MEMORY",
    -3: "VK_ERROR_INITIALIZATION_FAILED",
    -4: "VK_ERROR_DEVICE_LOST",
    -6: "VK_ERROR_LAYER_NOT_PRESENT",
    -7: "VK_ERROR_EXTENSION_NOT_PRESENT",
    -9: "VK_ERROR_INCOMPATIBLE_DRIVER",
}
_STRUCTURE_APPLICATION_INFO = 0
_STRUCTURE_INSTANCE_CREATE_INFO = 1
_STRUCTURE_MEMORY_PROPERTIES_2 = 1000059006
_STRUCTURE_MEMORY_BUDGET = 1000237000
_HEAP_DEVICE_LOCAL = 0x1
_API_1_0 = 1 << 22
_API_1_1 = (1 << 22) | (1 << 12)
_MIB = 1024 * 1024
_MAX_DEVICES = 64
_MAX_EXTENSIONS = 4096

_u32, _i32, _u64, _ptr = ctypes.c_uint32, ctypes.c_int32, ctypes.c_uint64, ctypes.c_void_p


class _ApplicationInfo(ctypes.Structure):
    _fields_ = [
        ("sType", _i32),
        ("pNext", _ptr),
        ("pApplicationName", ctypes.c_char_p),
        ("applicationVersion", _u32),
        ("pEngineName", ctypes.c_char_p),
        ("engineVersion", _u32),
        ("apiVersion", _u32),
    ]


class _InstanceCreateInfo(ctypes.Structure):
    _fields_ = [
        ("sType", _i32),
        ("pNext", _ptr),
        ("flags", _u32),
        ("pApplicationInfo", ctypes.POINTER(_ApplicationInfo)),
        ("enabledLayerCount", _u32),
        ("ppEnabledLayerNames", _ptr),
        ("enabledExtensionCount", _u32),
        ("ppEnabledExtensionNames", _ptr),
    ]


class _DeviceProperties(ctypes.Structure):
    # VkPhysicalDeviceProperties up to the name; `rest` is larger than its limits and sparse
    # properties (824 bytes in all on 64-bit systems), so the driver never writes past it.
    _fields_ = [
        ("apiVersion", _u32),
        ("driverVersion", _u32),
        ("vendorID", _u32),
        ("deviceID", _u32),
        ("deviceType", _i32),
        ("deviceName", ctypes.c_char * 256),
        ("rest", ctypes.c_uint64 * 256),
    ]


class _MemoryType(ctypes.Structure):
    _fields_ = [("propertyFlags", _u32), ("heapIndex", _u32)]


class _MemoryHeap(ctypes.Structure):
    _fields_ = [("size", _u64), ("flags", _u32)]


class _MemoryProperties(ctypes.Structure):
    _fields_ = [
        ("memoryTypeCount", _u32),
        ("memoryTypes", _MemoryType * 32),
        ("memoryHeapCount", _u32),
        ("memoryHeaps", _MemoryHeap * 16),
    ]


class _MemoryProperties2(ctypes.Structure):
    _fields_ = [("sType", _i32), ("pNext", _ptr), ("memoryProperties", _MemoryProperties)]


class _MemoryBudget(ctypes.Structure):
    _fields_ = [
        ("sType", _i32),
        ("pNext", _ptr),
        ("heapBudget", _u64 * 16),
        ("heapUsage", _u64 * 16),
    ]


class _ExtensionProperties(ctypes.Structure):
    _fields_ = [("extensionName", ctypes.c_char * 256), ("specVersion", _u32)]


def api_version_text(version: int) -> str:
    """VK_API_VERSION_MAJOR.MINOR.PATCH of an encoded version: 4206830 -> "1.3.238"."""
    return f"{version >> 22 & 0x7F}.{version >> 12 & 0x3FF}.{version & 0xFFF}"


def driver_version_text(vendor_id: int, version: int, platform: str = sys.platform) -> str:
    """The driver version as vulkaninfo shows it: NVIDIA and Intel on Windows use their own
    bit layouts, every other driver VK_MAKE_API_VERSION's."""
    if vendor_id == 0x10DE:
        parts = (version >> 22 & 0x3FF, version >> 14 & 0xFF, version >> 6 & 0xFF, version & 0x3F)
        return ".".join(map(str, parts))
    if vendor_id == 0x8086 and platform == "win32":
        return f"{version >> 14}.{version & 0x3FFF}"
    return api_version_text(version)


def loader_name(platform: str = sys.platform) -> str:
    """The file name of the Vulkan loader every driver installs on `platform`."""
    return LOADER_NAMES.get(platform, LINUX_LOADER)


def _result_name(result: int) -> str:
    return _RESULTS.get(result, f"VkResult {result}")


class _Loader:
    """The loader's exported entry points, typed for ctypes."""

    def __init__(self, library: ctypes.CDLL) -> None:
        self.library = library
        self.create_instance = library.vkCreateInstance
        self.create_instance.argtypes = [ctypes.POINTER(_InstanceCreateInfo), _ptr, _ptr]
        self.create_instance.restype = _i32
        self.destroy_instance = library.vkDestroyInstance
        self.destroy_instance.argtypes = [_ptr, _ptr]
        self.destroy_instance.restype = None
        self.enumerate = library.vkEnumeratePhysicalDevices
        self.enumerate.argtypes = [_ptr, ctypes.POINTER(_u32), ctypes.POINTER(_ptr)]
        self.enumerate.restype = _i32
        self.properties = library.vkGetPhysicalDeviceProperties
        self.properties.argtypes = [_ptr, ctypes.POINTER(_DeviceProperties)]
        self.properties.restype = None
        self.memory = library.vkGetPhysicalDeviceMemoryProperties
        self.memory.argtypes = [_ptr, ctypes.POINTER(_MemoryProperties)]
        self.memory.restype = None
        self.extensions = library.vkEnumerateDeviceExtensionProperties
        self.extensions.argtypes = [
            _ptr,
            ctypes.c_char_p,
            ctypes.POINTER(_u32),
            ctypes.POINTER(_ExtensionProperties),
        ]
        self.extensions.restype = _i32
        self.get_instance_proc = library.vkGetInstanceProcAddr
        self.get_instance_proc.argtypes = [_ptr, ctypes.c_char_p]
        self.get_instance_proc.restype = _ptr

    def version(self) -> int:
        """vkEnumerateInstanceVersion (Vulkan 1.1 loaders), else 1.0."""
        try:
            enumerate_version = self.library.vkEnumerateInstanceVersion
        except AttributeError:
            return _API_1_0
        enumerate_version.argtypes = [ctypes.POINTER(_u32)]
        enumerate_version.restype = _i32
        version = _u32(_API_1_0)
        return (
            version.value if enumerate_version(ctypes.byref(version)) == _VK_SUCCESS else _API_1_0
        )


def _open_loader(name: str) -> _Loader:
    try:
        library = ctypes.CDLL(name)
    except OSError as error:
        msg = (
            f"Vulkan: no usable Vulkan loader ({name}: {error}); install your GPU driver's "
            "Vulkan support (Debian/Ubuntu: the libvulkan1 package)"
        )
        raise SourceMissing(msg) from None
    try:
        return _Loader(library)
    except AttributeError as error:
        msg = f"Vulkan: {name} is not a Vulkan loader ({error}); reinstall the Vulkan loader"
        raise SourceFailed(msg) from None


def _create_instance(loader: _Loader, api_version: int) -> int:
    app = _ApplicationInfo(
        sType=_STRUCTURE_APPLICATION_INFO,
        pApplicationName=b"llamaship",
        pEngineName=b"llamaship",
        apiVersion=api_version,
    )
    info = _InstanceCreateInfo(
        sType=_STRUCTURE_INSTANCE_CREATE_INFO, pApplicationInfo=ctypes.pointer(app)
    )
    instance = _ptr()
    result = loader.create_instance(ctypes.byref(info), None, ctypes.byref(instance))
    if result == _VK_ERROR_INCOMPATIBLE_DRIVER:
        msg = (
            "Vulkan: the loader found no Vulkan driver (VK_ERROR_INCOMPATIBLE_DRIVER); "
            "install your GPU's Vulkan driver (Debian/Ubuntu: mesa-vulkan-drivers for AMD "
            "and Intel, the NVIDIA driver for NVIDIA)"
        )
        raise NoDriver(msg)
    if result != _VK_SUCCESS or not instance.value:
        raise SourceFailed(f"Vulkan: vkCreateInstance failed ({_result_name(result)})")
    return instance.value


def _physical_devices(loader: _Loader, instance: int) -> list[int]:
    count = _u32(_MAX_DEVICES)
    handles = (_ptr * _MAX_DEVICES)()
    result = loader.enumerate(instance, ctypes.byref(count), handles)
    if result not in (_VK_SUCCESS, _VK_INCOMPLETE):
        raise SourceFailed(f"Vulkan: vkEnumeratePhysicalDevices failed ({_result_name(result)})")
    return [handle for handle in handles[: count.value] if handle]


def _has_extension(loader: _Loader, device: int, name: bytes) -> bool:
    count = _u32(0)
    if loader.extensions(device, None, ctypes.byref(count), None) not in (
        _VK_SUCCESS,
        _VK_INCOMPLETE,
    ):
        return False
    count.value = min(count.value, _MAX_EXTENSIONS)
    extensions = (_ExtensionProperties * max(count.value, 1))()
    if loader.extensions(device, None, ctypes.byref(count), extensions) not in (
        _VK_SUCCESS,
        _VK_INCOMPLETE,
    ):
        return False
    return any(extension.extensionName == name for extension in extensions[: count.value])


def _memory(
    loader: _Loader, instance: int, device: int, budget_possible: bool
) -> tuple[int, int | None]:
    """Device-local memory and, with VK_EXT_memory_budget, how much of it is free (bytes)."""
    get_properties_2 = loader.get_instance_proc(instance, b"vkGetPhysicalDeviceMemoryProperties2")
    if (
        budget_possible
        and get_properties_2
        and _has_extension(loader, device, b"VK_EXT_memory_budget")
    ):
        budget = _MemoryBudget(sType=_STRUCTURE_MEMORY_BUDGET)
        properties_2 = _MemoryProperties2(
            sType=_STRUCTURE_MEMORY_PROPERTIES_2, pNext=ctypes.addressof(budget)
        )
        function = ctypes.CFUNCTYPE(None, _ptr, ctypes.POINTER(_MemoryProperties2))(
            get_properties_2
        )
        function(device, ctypes.byref(properties_2))
        memory = properties_2.memoryProperties
        local = _device_local_heaps(memory)
        free = sum(max(budget.heapBudget[i] - budget.heapUsage[i], 0) for i in local)
        return sum(memory.memoryHeaps[i].size for i in local), free
    memory = _MemoryProperties()
    loader.memory(device, ctypes.byref(memory))
    return sum(memory.memoryHeaps[i].size for i in _device_local_heaps(memory)), None


def _device_local_heaps(memory: _MemoryProperties) -> list[int]:
    count = min(memory.memoryHeapCount, 16)
    return [i for i in range(count) if memory.memoryHeaps[i].flags & _HEAP_DEVICE_LOCAL]


def _describe(loader: _Loader, instance: int, index: int, device: int, api: int) -> dict[str, Any]:
    properties = _DeviceProperties()
    loader.properties(device, ctypes.byref(properties))
    device_api = properties.apiVersion
    total, free = _memory(loader, instance, device, api >= _API_1_1 and device_api >= _API_1_1)
    kind = properties.deviceType
    return {
        "index": index,
        "name": properties.deviceName.decode("utf-8", "replace"),
        "vendor_id": properties.vendorID,
        "vendor": VENDORS.get(properties.vendorID),
        "device_id": properties.deviceID,
        "device_type": DEVICE_TYPES[kind] if 0 <= kind < len(DEVICE_TYPES) else "other",
        "api_version": api_version_text(device_api),
        "driver_version": driver_version_text(properties.vendorID, properties.driverVersion),
        "memory_mb": total // _MIB,
        "memory_free_mb": None if free is None else free // _MIB,
    }


def query_vulkan(name: str | None = None) -> dict[str, Any]:
    """The loader's version and every physical device (`VulkanReport` fields, plain data).

    Raises `SourceMissing` (no loader), `NoDriver` or `SourceFailed`.
    """
    loader = _open_loader(name or loader_name())
    loader_version = loader.version()
    api = _API_1_1 if loader_version >= _API_1_1 else _API_1_0
    instance = _create_instance(loader, api)
    try:
        devices = [
            _describe(loader, instance, index, device, api)
            for index, device in enumerate(_physical_devices(loader, instance))
        ]
    finally:
        loader.destroy_instance(instance, None)
    return {
        "source": "loader",
        "loader_version": api_version_text(loader_version),
        "devices": devices,
    }
