# KVM acceleration probe: a boot sector that does what guest kernels and
# boot loaders do (real-mode BIOS calls, protected mode, timer interrupts
# returning with iret), then powers the machine off through ACPI (PIIX4/ICH9
# PM1a_CNT at 0x604, where SeaBIOS puts it). A guest that gets there ran
# under the accelerator; one that pauses or hangs did not.
	.code16
	.globl _start
_start:
	cli
	xor %ax, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x7c00, %sp
	ljmp $0, $real
real:
	mov $0x3f8, %dx
	mov $'R', %al
	out %al, %dx
	mov $0x0e, %ah		# BIOS teletype: a real-mode int and iret
	mov $'.', %al
	int $0x10
	cli
	lgdtl gdtr
	mov %cr0, %eax
	or $1, %al
	mov %eax, %cr0
	ljmpl $0x08, $pm
	.code32
pm:
	mov $0x10, %ax
	mov %ax, %ds
	mov %ax, %es
	mov %ax, %ss
	mov $0x7c00, %esp
	# IDT at 0x1000: every vector to eoi, 0x20 (timer) to tick.
	mov $0x1000, %edi
	mov $256, %ecx
1:	mov $eoi, %eax
	mov %ax, (%edi)
	movw $0x08, 2(%edi)
	movw $0x8e00, 4(%edi)
	shr $16, %eax
	mov %ax, 6(%edi)
	add $8, %edi
	loop 1b
	mov $tick, %eax
	mov %ax, 0x1100
	shr $16, %eax
	mov %ax, 0x1106
	lidtl idtr
	# PICs to vectors 0x20/0x28, only the timer unmasked.
	mov $0x11, %al
	out %al, $0x20
	out %al, $0xa0
	mov $0x20, %al
	out %al, $0x21
	mov $0x28, %al
	out %al, $0xa1
	mov $4, %al
	out %al, $0x21
	mov $2, %al
	out %al, $0xa1
	mov $1, %al
	out %al, $0x21
	out %al, $0xa1
	mov $0xfe, %al
	out %al, $0x21
	mov $0xff, %al
	out %al, $0xa1
	# PIT at 1 kHz.
	mov $0x34, %al
	out %al, $0x43
	mov $0xa9, %al
	out %al, $0x40
	mov $0x04, %al
	out %al, $0x40
	movl $0, ticks
	sti
2:	hlt
	cmpl $50, ticks
	jb 2b
	cli
	mov $0x3f8, %dx
	mov $'K', %al
	out %al, %dx
	mov $0x604, %dx
	mov $0x2000, %ax
	out %ax, %dx
3:	hlt
	jmp 3b
tick:
	pushal
	incl ticks
	mov $0x20, %al
	out %al, $0x20
	popal
	iret
eoi:
	pushal
	mov $0x20, %al
	out %al, $0xa0
	out %al, $0x20
	popal
	iret
	.p2align 3
gdt:
	.quad 0
	.quad 0x00cf9a000000ffff
	.quad 0x00cf92000000ffff
gdtr:
	.word gdtr - gdt - 1
	.long gdt
idtr:
	.word 256*8 - 1
	.long 0x1000
ticks:
	.long 0
	.org 510
	.word 0xaa55
