"""Element types of the language; they are the IR's `DType` members themselves, so the
frontend needs no translation table."""

from kernelforge.ir import DType

int1 = DType.int1
int8 = DType.int8
int16 = DType.int16
int32 = DType.int32
int64 = DType.int64
uint8 = DType.uint8
float16 = DType.float16
bfloat16 = DType.bfloat16
float32 = DType.float32
float64 = DType.float64
